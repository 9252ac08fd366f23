"""Training throughput of the real `nat-gan train` loop for a recipe: images/s with everything on.

    .venv/bin/python benchmarks/bench_train.py --recipe recipes/demo.toml --steps 60 --warmup 10
    .venv/bin/python benchmarks/bench_train.py --recipe recipes/ffhq256.toml --steps 100 --device cuda

``nat-gan bench --train`` times a bare G+D step. This script runs the trainer itself: data loading, bCR,
lazy R1 at its interval, D clipping, EMA, mixed precision and the recipe's batch. That is the figure to
compare with the official code's training images/s. The data is the built-in digits set, upscaled to the
recipe's resolution, so it needs no download.
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
from natgan.train import train

STEP_LINE = re.compile(r"step (\d+)/\d+\s+kimg [\d.]+\s+([\d.]+) img/s")


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

    work = args.workdir or Path(tempfile.mkdtemp(prefix="natgan-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    recipe = recipes.load(args.recipe)
    size = recipe.model.resolution
    data = work / f"digits{size}.lmdb"
    prepare_digits(data, sizes=[size], progress=False)
    if args.warmup < 1 or args.steps % args.warmup:
        sys.exit("--steps must be a multiple of --warmup (the log interval), and --warmup at least 1")
    total = args.warmup + args.steps
    overrides = [f"data.path={data}", f"train.iterations={total}", f"train.log_every={args.warmup}",
                 f"train.checkpoint_every={total}", f"train.sample_every={total}", "eval.every=0", *args.set]
    if args.device:
        overrides.append(f"train.device={args.device}")
    recipe = recipes.load(args.recipe, overrides)
    run_dir = work / "run"
    result = train(recipe, run_dir, show_progress=False)

    rates = {int(m.group(1)): float(m.group(2))
             for m in map(STEP_LINE.search, (run_dir / "log.txt").read_text().splitlines()) if m}
    batch = recipe.train.batch
    timed = [rates[s] for s in range(2 * args.warmup, total + 1, args.warmup) if s in rates]
    if len(timed) != args.steps // args.warmup:
        sys.exit(f"expected {args.steps // args.warmup} timed log lines in {run_dir / 'log.txt'}, found {len(timed)}")
    seconds = sum(args.warmup * batch / r for r in timed)
    report = {"recipe": str(args.recipe), "model": recipe.model_name, "resolution": size, "batch": batch,
              "device": recipe.train.device, "precision": recipe.train.precision, "bcr": recipe.train.bcr,
              "r1_every": recipe.train.r1_every, "steps_timed": args.steps, "warmup": args.warmup,
              "img_per_s": batch * args.steps / seconds, "ms_per_step": 1e3 * seconds / args.steps,
              "finished_step": result.step}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['model']} {size}px, batch {batch}, {report['precision']}, bCR {report['bcr']}, "
              f"R1 every {report['r1_every']}: {report['img_per_s']:.1f} img/s "
              f"({report['ms_per_step']:.1f} ms/step over {args.steps} steps after {args.warmup} warm-up)")


if __name__ == "__main__":
    main()
