"""Learning proof for ADA: the demo StyleNAT on a small subset of `digits`, without and with ADA.

Both runs use recipes/demo.toml on the first ``--images`` digits for the same number of steps. The run
"without augmentation" is ``train.augment = "fixed"`` at ``augment_p = 0``: p = 0 is the exact identity
(nothing is drawn, D sees the images untouched), but the overfitting heuristic r_t = E[sign(D(real))]
is still measured, so its curve shows D overfitting. The ADA run adjusts p toward ``ada_target``.
digits-FID (the offline digits-classifier FID of benchmarks/learning_curve.py, 1,000 EMA samples
against all 1,797 digits, i.e. against the distribution the subset was drawn from) is taken at every
report point.

    .venv/bin/python benchmarks/ada_learning.py --images 100 --steps 800 --every 100 --ada-kimg 10 \
        --outdir /tmp/ada-proof
    # the setting where D overfits (docs/benchmarks.md): R1 at the ADA paper's gamma = 0.0002 * 32^2 / 16
    .venv/bin/python benchmarks/ada_learning.py --images 100 --steps 3000 --every 250 --num 500 --ada-kimg 5 \
        --set train.r1=0.0128

Prints one markdown table per run (step, kimg, p, r_t, digits-FID) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from natgan import checkpoint, recipe as recipes
from natgan.data import prepare_digits
from natgan.metrics.stats import frechet_distance, statistics
from natgan.train import resolve_run, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import digit_labels, features, generated, load_real, train_extractor  # noqa: E402


def run_curve(name: str, recipe: recipes.Recipe, run: Path, steps: int, every: int, net, ref, num: int,
              label_pool=None) -> list:
    """FID per ``every`` steps; a class-conditional recipe's images get labels drawn from ``label_pool``."""
    rows, step, start = [], 0, time.time()
    while step < steps:
        resolved, ck = recipe, None
        if step:
            resolved, ck, _ = resolve_run(recipe_path=None, overrides=[], outdir=run, resume="auto")
        result = train(resolved, run, resume_from=ck, max_steps=every, show_progress=False)
        step = result.step
        aug = checkpoint.load(run / "latest.pt")["extra"]["augment"]
        fid = frechet_distance(statistics(features(net, generated(run / "latest.pt", num, label_pool))), ref)
        rows.append((step, result.images_seen / 1000, aug["p"], aug["rt"], fid, (time.time() - start) / 60))
        print(f"{name}: step {step:5d}  p {aug['p']:.3f}  r_t {aug['rt']:.3f}  digits-FID {fid:8.2f}  "
              f"{rows[-1][-1]:.1f} min", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100, help="size of the training subset (first N digits)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--ada-kimg", type=float, default=10.0,
                    help="kimg for p to cross [0, 1] (paper: 500 for runs of 10^4 kimg; scaled to this run)")
    ap.add_argument("--ada-target", type=float, default=0.6)
    ap.add_argument("--num", type=int, default=1000, help="generated images per FID")
    ap.add_argument("--outdir", default="/tmp/natgan-ada-proof")
    ap.add_argument("--recipe", default="recipes/demo.toml")
    ap.add_argument("--runs", default="none,ada", help="which runs, in order: none, ada")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra recipe overrides for both runs, e.g. train.r1=0.0128 (repeatable)")
    args = ap.parse_args()

    out = Path(args.outdir)
    full, subset = out / "digits.lmdb", out / f"digits{args.images}.lmdb"
    if not full.exists():
        prepare_digits(full, progress=False)
    if not subset.exists():
        prepare_digits(subset, progress=False, max_images=args.images)
    real = load_real(str(full))
    net = train_extractor(real)
    ref = statistics(features(net, real))
    common = [f"data.path=\"{subset}\"", f"train.iterations={args.steps}", f"train.checkpoint_every={args.every}",
              f"train.sample_every={args.every}", "train.log_every=25", *args.set]
    settings = {
        "none": ["train.augment=\"fixed\"", "train.augment_p=0.0"],
        "ada": ["train.augment=\"ada\"", f"train.ada_kimg={args.ada_kimg}", f"train.ada_target={args.ada_target}"],
    }
    tables = {}
    for name in args.runs.split(","):
        recipe = recipes.load(args.recipe, common + settings[name])
        tables[name] = run_curve(name, recipe, out / f"run-{name}", args.steps, args.every, net, ref, args.num,
                                 digit_labels(full))
    for name, rows in tables.items():
        print(f"\n{name}: {args.images} digits, {args.steps} steps\n\n"
              "| step | kimg | p | r_t | digits-FID | minutes |\n"
              "|---|---|---|---|---|---|")
        for step, kimg, p, rt, fid, minutes in rows:
            print(f"| {step} | {kimg:.1f} | {p:.3f} | {rt:.3f} | {fid:.2f} | {minutes:.1f} |")


if __name__ == "__main__":
    main()
