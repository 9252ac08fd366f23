"""The official implementations ``benchmarks/bench_peers.py`` compares nat-gan with, one module per peer.

Each peer module builds the official G and D from a checkout (on ``sys.path`` inside
:func:`peers.official.official_checkout`) and writes them as the official code saves them; ``transformer``
holds what the StyleSwin and StyleNAT peers share. The comparison itself is :mod:`natgan.bench.peers`.
"""
