"""Learning proof of class conditioning: train a conditional model on `digits` (10 labels), then ask a digit
classifier which digit each generated image shows.

The classifier is scikit-learn's LogisticRegression on the raw pixels of the real 32x32 digits (the same
LMDB the model trains on). Its held-out accuracy on real digits (a stratified 25 % split) is printed first:
it bounds what the score can show. It is then refitted on all real digits and labels ``--per-class`` samples
of each class (seeds 0..N-1, truncation off). **Conditional accuracy** = the fraction whose predicted digit is
the requested class (chance: 10 %). Every checkpoint of the run is scored, so the table is a learning curve.

    .venv/bin/python benchmarks/bench_conditional.py --recipe recipes/demo_conditional.toml \\
        --outdir /tmp/cond-stylenat --figure docs/figures/conditional_stylenat.png

Trains (``nat-gan train``, resuming what is already there) unless ``--skip-train``; prints a markdown table
and, with ``--json``, the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from natgan import checkpoint
from natgan.data import open_dataset, prepare_digits
from natgan.sampling import class_grid, fixed_class, seed_grid
from natgan.sampling.export import save_png


def real_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 1024]`` grey pixels in [0, 1] and ``[N]`` labels of the prepared digits."""
    src = open_dataset(path)
    if src.labels is None:
        raise SystemExit(f"{path}: no labels (prepare it with this nat-gan: `nat-gan prepare digits`)")
    pixels = np.stack([src[i][..., 0] for i in range(len(src))]).reshape(len(src), -1) / 255.0
    return pixels, src.labels.copy()


def fit_classifier(x: np.ndarray, y: np.ndarray):
    """LogisticRegression on pixels; returns (model fitted on everything, held-out accuracy of a 75/25 fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    held_out = LogisticRegression(max_iter=2000).fit(x_tr, y_tr).score(x_te, y_te)
    return LogisticRegression(max_iter=2000).fit(x, y), held_out


def conditional_accuracy(ckpt_path: Path, clf, per_class: int) -> tuple[float, list[float]]:
    ck = checkpoint.load(ckpt_path)
    G = checkpoint.build_generator(ck)
    k = G.num_classes
    seeds = list(range(per_class))
    per = []
    for c in range(k):
        grid = seed_grid(G, seeds, per_class, 1, labels=fixed_class(c), batch_size=100)   # [H, N*W, 3]
        side = grid.shape[0]
        images = grid[..., 0].reshape(side, per_class, side).transpose(1, 0, 2).reshape(per_class, -1) / 255.0
        per.append(float((clf.predict(images) == c).mean()))
    return float(np.mean(per)), per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/demo_conditional.toml")
    ap.add_argument("--data", default=None, help="prepared digits LMDB (default OUTDIR/digits.lmdb, built if missing)")
    ap.add_argument("--outdir", default="/tmp/natgan-conditional")
    ap.add_argument("--per-class", type=int, default=100, help="generated images scored per class")
    ap.add_argument("--skip-train", action="store_true", help="score the checkpoints already in OUTDIR/run")
    ap.add_argument("--steps", default=None, help="score only these checkpoint steps, e.g. 600 or 200,400")
    ap.add_argument("--figure", default=None, help="write the per-class grid (10 seeds x 10 classes) here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else out / "digits.lmdb"
    if not data.exists():
        prepare_digits(data, progress=False)
    run = out / "run"
    minutes = None
    if not args.skip_train:
        start = time.time()
        subprocess.run([sys.executable, "-m", "natgan", "train", "--recipe", args.recipe, "--data", str(data),
                        "--outdir", str(run), "--resume", "auto", "--no-progress"], check=True)
        minutes = (time.time() - start) / 60

    x, y = real_digits(data)
    clf, held_out = fit_classifier(x, y)
    print(f"classifier (LogisticRegression on pixels): held-out accuracy on real digits {held_out:.3f}")
    ckpts = sorted(run.glob("ckpt-*.pt"))
    if args.steps:
        wanted = {int(v) for v in args.steps.split(",")}
        ckpts = [p for p in ckpts if int(p.stem.split("-")[1]) in wanted]
    rows = []
    for path in ckpts:
        ck = checkpoint.load(path)
        acc, per = conditional_accuracy(path, clf, args.per_class)
        rows.append({"checkpoint": path.name, "step": ck["progress"]["step"],
                     "kimg": ck["progress"]["images_seen"] / 1000, "accuracy": acc, "per_class": per})
        print(f"{path.name}: step {rows[-1]['step']}, conditional accuracy {acc:.3f} "
              f"(per class {', '.join(f'{p:.2f}' for p in per)})", flush=True)
    if args.figure and ckpts:
        G = checkpoint.build_generator(checkpoint.load(ckpts[-1]))
        save_png(Path(args.figure), class_grid(G, list(range(10)), list(range(G.num_classes))))
        print(f"per-class grid (rows = classes 0-9, columns = seeds 0-9): {args.figure}")
    print("\n| step | kimg | conditional accuracy | lowest class |\n|---|---|---|---|")
    for r in rows:
        low = int(np.argmin(r["per_class"]))
        print(f"| {r['step']} | {r['kimg']:.1f} | {100 * r['accuracy']:.1f} % | "
              f"{low}: {100 * r['per_class'][low]:.0f} % |")
    if minutes is not None:
        print(f"\ntraining wall clock: {minutes:.1f} min")
    if args.json:
        print(json.dumps({"classifier_held_out": held_out, "train_minutes": minutes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
