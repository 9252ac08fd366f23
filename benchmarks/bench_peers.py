"""nat-gan against the official implementations, side by side, on the SAME weights.

    .venv/bin/python benchmarks/bench_peers.py --rosinality /tmp/stylegan2-pytorch \\
        --stylegan2-ada /tmp/stylegan2-ada-pytorch --gansformer /tmp/gansformer/pytorch_version \\
        --styleswin /tmp/StyleSwin --stylenat /tmp/StyleNAT [--device cpu] [--size 32] [--json]

For every official checkout given (nothing of theirs is part of nat-gan), per model:

1. builds the official networks with the official constructors (seeded), writes them as the official code
   saves them (rosinality: ``torch.save`` of train.py's dict; stylegan2-ada / GANformer: ``pickle.dump`` of
   the training loop's snapshot; GANformer with ``--ganformer-default``'s settings; StyleSwin and StyleNAT:
   ``train_styleswin.py``'s ``{g, d, g_ema, g_optim, d_optim, args}``, the format of the released StyleNAT
   files too), imports that file with ``nat-gan import`` (so the importer is exercised too);
2. parity: max |nat-gan - official| of the generator output (stored noise, fixed z) and of D's logits, in
   float32 on the device, and in float64 where the official code can run in float64;
3. speed: generator img/s at each ``--batch`` and a training step (D step + G step, non-saturating loss,
   Adam; :func:`natgan.bench.measure.measure_train_step` drives both implementations through the same
   step, so only the networks differ), plus peak memory, each with the ratio nat-gan / official
   (img/s ratio > 1: nat-gan faster; memory ratio < 1: nat-gan leaner). The two implementations alternate
   ``--repeat`` times and the best of each is kept, because shared machines are noisy.

Official CUDA ops: on CUDA their JIT-compiled kernels are used where they compile; on CPU rosinality's
``cpp_extension.load`` (which runs at import and needs a CUDA toolchain) is answered with ``None`` during
the import, so its own CPU fallbacks run; stylegan2-ada's ops pick their reference implementations on CPU
by themselves. The official stylegan2-ada networks are built with ``--fp32`` settings (no fp16 layers, no
clamp) so that both sides compute at equal precision.

StyleSwin (microsoft/StyleSwin) and StyleNAT (SHI-Labs/StyleNAT, Hydra layout, ``legacy=False``) are built
as their training scripts build them: StyleSwin's args come from running the ``add_argument`` calls of its
``train_styleswin.py`` (nothing else of that script runs) with the FFHQ flags; StyleNAT's from its
``conf/runs/ffhq_256.yaml`` (kernels 3 then 7, dilations ``[1]`` up to 8 px, ``[1, res/8]`` above), cut to the
levels of ``--size``. Both discriminators are the official SWAGAN-style D with spectral norm. Their
parameters are re-drawn after the official init so that every parameter matters (the upsample ``alpha`` is
0 and the RPB tables are ~0 at init). ``--width-divisor N`` (default 8 on CPU, 1 = the official widths on
CUDA) divides the official G ``in_channels`` list and D ``channels`` dict by N, as the shared official
fixtures did (``shared/fixtures/official/README.md``): the official modules are re-executed from their own
source **in memory** with that one assignment wrapped; nothing on disk changes. Where ``timm`` is not
installed, its two helpers the official generators import (``to_2tuple``, ``trunc_normal_``) are stood in
by torch equivalents (every value they initialise is re-drawn anyway).

**StyleNAT's neighborhood attention.** The official code calls NATTEN 0.17's unfused ``na2d_qk`` /
``na2d_av`` with RPB, which natten >= 0.20 no longer has. While its code is imported and run,
``natten`` is a pure-PyTorch stand-in (``benchmarks/natten_v017.py``, written from the documented 0.17
semantics, independent of nat-gan's NA op); the previous ``sys.modules`` entries come back afterwards.
The official StyleNAT timings therefore measure the official model code around a plain stand-in NA, not
NATTEN's kernels; the result says so (``"official_na"``).

:func:`run_peers` is the importable entry point (the GPU acceptance script calls it); it returns a dict.
Layout: this script is the command line and the list of peers; each peer's official model is built in a module
of ``benchmarks/peers/`` (``official.py``: importing a checkout and forgetting it again; ``transformer.py``: what
StyleSwin and StyleNAT share), and the comparison (parity, timing, the table) is :mod:`natgan.bench.peers`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:    # the sibling modules, when run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import natten_v017  # noqa: E402
from natgan.bench.measure import BenchSettings, machine, resolve_device  # noqa: E402
from natgan.bench.peers import compare, table  # noqa: E402
from peers.ganformer import ganformer_pair  # noqa: E402
from peers.official import official_checkout  # noqa: E402
from peers.rosinality import rosinality_pair  # noqa: E402
from peers.stylegan2_ada import stylegan2_ada_pair  # noqa: E402
from peers.stylenat import stylenat_pair  # noqa: E402
from peers.styleswin import styleswin_pair  # noqa: E402
from peers.transformer import timm_stand_in  # noqa: E402

PEERS = ("rosinality", "stylegan2-ada", "ganformer", "styleswin", "stylenat")
NATGAN_MODEL = {"rosinality": "stylegan2", "stylegan2-ada": "stylegan2", "ganformer": "ganformer",
                "styleswin": "styleswin", "stylenat": "stylenat"}
TRANSFORMER_PEERS = ("styleswin", "stylenat")


def peer_stand_ins(peer: str) -> dict[str, types.ModuleType]:
    """The modules ``official_checkout`` stands in for ``peer``'s code (see module docstring)."""
    modules: dict[str, types.ModuleType] = {}
    if peer in TRANSFORMER_PEERS and importlib.util.find_spec("timm") is None:
        modules.update(timm_stand_in())
    if peer == "stylenat":
        modules.update(natten_v017.stand_in_modules())
    return modules


BUILDERS = {"rosinality": rosinality_pair, "stylegan2-ada": stylegan2_ada_pair, "ganformer": ganformer_pair,
            "styleswin": styleswin_pair, "stylenat": stylenat_pair}


def run_peers(checkouts: dict[str, str], *, device: str = "auto", size: int | None = None, style_dim: int = 512,
              n_mlp: int = 8, channel_multiplier: int = 2, batches: tuple[int, ...] = (1, 16),
              train_batch: int | None = None, warmup: int | None = None, rounds: int | None = None,
              repeat: int = 2, train: bool = True, float64: bool = True, width_divisor: int | None = None
              ) -> dict[str, Any]:
    """Parity and speed of nat-gan vs each official implementation in ``checkouts`` ({peer: path}).

    ``width_divisor``: StyleSwin/StyleNAT channel tables // this (default 8 on CPU, 1 on CUDA; see module
    docstring). Returns ``{"machine": ..., "settings": ..., "models": {peer: {...}}}``; every ratio is
    nat-gan / official.
    """
    dev = resolve_device(device)
    size = size or (256 if dev.type == "cuda" else 32)
    width_divisor = width_divisor or (1 if dev.type == "cuda" else 8)
    train_batch = train_batch or (max(batches) if dev.type == "cuda" else 4)
    settings = BenchSettings(batches=tuple(batches), warmup=warmup, rounds=rounds, precision="fp32", device=str(dev),
                             flops=False, train=train, train_batch=train_batch)
    out: dict[str, Any] = {"machine": machine(dev), "settings": {
        "size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": channel_multiplier,
        "batches": list(batches), "train_batch": train_batch, "precision": "fp32", "repeat": repeat,
        "width_divisor": width_divisor}, "models": {}}
    for peer, path in checkouts.items():
        if peer not in BUILDERS:
            raise SystemExit(f"error: unknown peer '{peer}' (known: {', '.join(PEERS)})")
        extra = {"width_divisor": width_divisor} if peer in TRANSFORMER_PEERS else {}
        with official_checkout(path, dev, peer_stand_ins(peer)) as root, tempfile.TemporaryDirectory() as tmp:
            official = BUILDERS[peer](root, size, style_dim, n_mlp, channel_multiplier, Path(tmp), **extra)
            out["models"][peer] = {"natgan_model": NATGAN_MODEL[peer], **compare(
                peer, official, settings=settings, device=dev, batches=tuple(batches), train_batch=train_batch,
                repeat=repeat, train=train, float64=float64)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rosinality", help="checkout of rosinality/stylegan2-pytorch")
    parser.add_argument("--stylegan2-ada", dest="stylegan2_ada", help="checkout of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--gansformer", help="checkout of dorarad/gansformer (its pytorch_version/ folder)")
    parser.add_argument("--styleswin", help="checkout of microsoft/StyleSwin")
    parser.add_argument("--stylenat", help="checkout of SHI-Labs/StyleNAT (its NA runs on a stand-in, see above)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="resolution [256 on CUDA, 32 on CPU]")
    parser.add_argument("--style-dim", type=int, default=512)
    parser.add_argument("--n-mlp", type=int, default=8)
    parser.add_argument("--channel-multiplier", type=int, default=2)
    parser.add_argument("--width-divisor", type=int, default=None,
                        help="StyleSwin/StyleNAT channel tables // N [8 on CPU, 1 = official widths on CUDA]")
    parser.add_argument("--batch", default="1,16", help="generator batch sizes")
    parser.add_argument("--train-batch", type=int, default=None, help="[largest --batch on CUDA, 4 on CPU]")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2, help="alternate the two implementations this many times")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    checkouts = {k: v for k, v in (("rosinality", args.rosinality), ("stylegan2-ada", args.stylegan2_ada),
                                   ("ganformer", args.gansformer), ("styleswin", args.styleswin),
                                   ("stylenat", args.stylenat)) if v}
    if not checkouts:
        parser.error("give at least one official checkout (--rosinality, --stylegan2-ada, --gansformer, "
                     "--styleswin, --stylenat)")
    if args.width_divisor is not None and args.width_divisor < 1:
        parser.error(f"--width-divisor {args.width_divisor}: expected a positive integer")
    result = run_peers(checkouts, device=args.device, size=args.size, style_dim=args.style_dim, n_mlp=args.n_mlp,
                       channel_multiplier=args.channel_multiplier,
                       batches=tuple(int(b) for b in args.batch.split(",")), train_batch=args.train_batch,
                       warmup=args.warmup, rounds=args.rounds, repeat=args.repeat, train=not args.no_train,
                       width_divisor=args.width_divisor)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
