"""The sections of ``benchmarks/gpu_acceptance.py``, one module each (``common`` holds what several share).

Each module holds one section's ``run(ctx)`` function and its helpers; ``benchmarks/gpu_acceptance.py`` lists
them, with caps and goals, in priority order (``--only NAME`` runs one alone). They import sibling benchmark
scripts (``bench_fid``, ``bench_train`` ...) by name: the acceptance script puts ``benchmarks/`` on ``sys.path``.
"""
