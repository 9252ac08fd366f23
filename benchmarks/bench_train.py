"""Training throughput of the real `nat-gan train` loop for a recipe: images/s with everything on.

    .venv/bin/python benchmarks/bench_train.py --recipe recipes/demo.toml --steps 60 --warmup 10
    .venv/bin/python benchmarks/bench_train.py --recipe recipes/ffhq256.toml --steps 100 --device cuda

``nat-gan bench --train`` times a bare G+D step. This script runs the trainer itself: data loading, bCR,
lazy R1 at its interval, D clipping, EMA, mixed precision and the recipe's batch. That is the figure to
compare with the official code's training images/s. The data is the built-in digits set, upscaled to the
recipe's resolution, so it needs no download; a class-conditional recipe (``model.num_classes = 10``, e.g.
recipes/demo_conditional.toml) trains on the digits' 10 labels as ``nat-gan train`` would.
The run logs every ``--warmup`` steps (logging every step would add TensorBoard writes to what is timed). Each
logged rate covers the time since the previous log line, so consecutive lines add up to the wall time between
them; that also holds on a GPU, where reading the losses synchronises. The first ``--warmup`` steps (allocator,
cudnn/compile autotuning) are dropped. The rest are summed as images over seconds. One checkpoint and one
sample grid are written at the very end, outside the timed steps.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from natgan import recipe as recipes
from natgan.data import prepare_digits
from natgan.errors import NatGanError
from natgan.train import train

STEP_LINE = re.compile(r"step (\d+)/\d+\s+kimg [\d.]+\s+([\d.]+) img/s")


def measure_training(recipe_path: Path, *, steps: int = 60, warmup: int = 10, device: str | None = None,
                     sets: list[str] | None = None, workdir: Path | None = None) -> dict:
    """Images/s (and peak memory) of ``steps`` trainer steps after ``warmup`` untimed ones; see the module doc."""
    import torch

    from natgan.bench.memory import PeakMemory
    from natgan.errors import ConfigError
    from natgan.devices import resolve_device

    if warmup < 1 or steps % warmup:
        raise ConfigError("--steps must be a multiple of --warmup (the log interval), and --warmup at least 1")
    work = workdir or Path(tempfile.mkdtemp(prefix="natgan-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    recipe = recipes.load(recipe_path, list(sets or []))
    size = recipe.model.resolution
    data = work / f"digits{size}.lmdb"
    if not data.exists():
        prepare_digits(data, sizes=[size], progress=False)
    total = warmup + steps
    overrides = [f"data.path={data}", f"train.iterations={total}", f"train.log_every={warmup}",
                 f"train.checkpoint_every={total}", f"train.sample_every={total}", "eval.every=0", *(sets or [])]
    if device:
        overrides.append(f"train.device={device}")
    recipe = recipes.load(recipe_path, overrides)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))  # fresh each call: several precisions share data
    with PeakMemory(resolve_device(recipe.train.device)) as mem:
        result = train(recipe, run_dir, show_progress=False)

    rates = {int(m.group(1)): float(m.group(2))
             for m in map(STEP_LINE.search, (run_dir / "log.txt").read_text().splitlines()) if m}
    batch = recipe.train.batch
    timed = [rates[s] for s in range(2 * warmup, total + 1, warmup) if s in rates]
    if len(timed) != steps // warmup:
        raise RuntimeError(f"expected {steps // warmup} timed log lines in {run_dir / 'log.txt'}, found {len(timed)}")
    seconds = sum(warmup * batch / r for r in timed)
    peak = mem.report.peak_bytes
    return {"recipe": str(recipe_path), "model": recipe.model_name, "resolution": size, "batch": batch,
            "batch_per_gpu": recipe.train.batch_per_gpu, "device": recipe.train.device,
            "precision": recipe.train.precision, "bcr": recipe.train.bcr, "r1_every": recipe.train.r1_every,
            "steps_timed": steps, "warmup": warmup, "img_per_s": batch * steps / seconds,
            "ms_per_step": 1e3 * seconds / steps, "finished_step": result.step,
            "peak_memory_mb": None if peak is None else round(peak / 2**20, 1), "memory_method": mem.report.method,
            "torch": torch.__version__,
            **({"labels": f"class-conditional ({recipe.model.num_classes} classes): the trainer's own labels (reals "
                          f"with their digit labels, fakes drawn from the digits' label distribution)"}
               if getattr(recipe.model, "num_classes", 0) else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=60, help="timed steps (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    ap.add_argument("--device", default=None, help="override train.device (auto | cpu | cuda)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="recipe override")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data and run here (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        report = measure_training(args.recipe, steps=args.steps, warmup=args.warmup, device=args.device,
                                  sets=args.set, workdir=args.workdir)
    except (NatGanError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['model']} {report['resolution']}px, batch {report['batch']}, {report['precision']}, "
              f"bCR {report['bcr']}, R1 every {report['r1_every']}: {report['img_per_s']:.1f} img/s "
              f"({report['ms_per_step']:.1f} ms/step over {args.steps} steps after {args.warmup} warm-up; "
              f"peak memory {report['peak_memory_mb']} MB)")
        if report.get("labels"):
            print(f"labels: {report['labels']}")


if __name__ == "__main__":
    main()
