"""Learning proof: train the demo StyleNAT on `digits` and show an FID that falls, fully offline.

FID here uses a *digits classifier* as the feature extractor (a small CNN trained on the same 1,797
images for a few seconds, penultimate 64-d features) instead of Inception, whose weights cannot be
downloaded offline; this is the usual practice for MNIST-like data. The number is therefore not
comparable with Inception FIDs, but it falls only if generated digits become realistic and diverse.

    .venv/bin/python benchmarks/learning_curve.py --steps 600 --every 100 --outdir /tmp/curve
    .venv/bin/python benchmarks/learning_curve.py --recipe recipes/demo_conditional.toml   # labels from the digits

Prints a markdown table (step, kimg, wall-clock minutes, FID) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from natgan import checkpoint, recipe as recipes
from natgan.data import open_dataset, prepare_digits
from natgan.metrics.stats import frechet_distance, statistics
from natgan.models.normalization import to_uint8
from natgan.train import resolve_run, train


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.features(x))


def load_real(path: str) -> torch.Tensor:
    src = open_dataset(path)
    return torch.from_numpy(np.stack([src[i] for i in range(len(src))])).permute(0, 3, 1, 2)


def digit_labels(path) -> torch.Tensor | None:
    """The labels of a prepared digits dataset (what a class-conditional model's images are drawn from)."""
    src = open_dataset(str(path))
    try:
        return None if src.labels is None else torch.as_tensor(src.labels, dtype=torch.long)
    finally:
        src.close()


def train_extractor(images: torch.Tensor, seed: int = 0) -> nn.Module:
    from sklearn.datasets import load_digits

    labels = torch.from_numpy(load_digits().target).long()
    torch.manual_seed(seed)
    net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x = images.float() / 255
    for _epoch in range(8):
        perm = torch.randperm(len(x))
        for idx in perm.split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(x).argmax(1) == labels).float().mean().item()
    print(f"digits classifier train accuracy {acc:.3f}")
    return net.eval()


@torch.no_grad()
def features(net: nn.Module, uint8: torch.Tensor) -> np.ndarray:
    return torch.cat([net.features(b.float() / 255) for b in uint8.split(256)]).double().numpy()




@torch.no_grad()
def generated(ckpt_path: Path, n: int, label_pool: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` images of the checkpoint's G; a class-conditional G gets labels drawn from ``label_pool`` (the
    digits' labels: their class distribution, as `nat-gan fid` does)."""
    from natgan.sampling.classes import dataset_labels, num_classes_of

    ck = checkpoint.load(ckpt_path)
    G = checkpoint.build_generator(ck)
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(123))
    if not num_classes_of(G):
        return torch.cat([to_uint8(G(b), G.normalization) for b in z.split(100)])
    c = dataset_labels(label_pool)(range(n))
    return torch.cat([to_uint8(G(b, cb), G.normalization) for b, cb in zip(z.split(100), c.split(100))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--num", type=int, default=1000, help="generated images per FID")
    ap.add_argument("--outdir", default="/tmp/natgan-curve")
    ap.add_argument("--recipe", default="recipes/demo.toml")
    args = ap.parse_args()

    out = Path(args.outdir)
    data = out / "digits.lmdb"
    if not data.exists():
        prepare_digits(data, progress=False)
    real = load_real(str(data))
    label_pool = digit_labels(data)
    net = train_extractor(real)
    ref = statistics(features(net, real))

    r = recipes.load(args.recipe, [f"data.path=\"{data}\"", f"train.iterations={args.steps}",
                                   f"train.checkpoint_every={args.every}", "train.keep_checkpoints=1000",
                                   f"train.sample_every={args.every}"])
    run = out / "run"
    rows = []
    start = time.time()
    step = 0
    while step < args.steps:
        t0 = time.time()
        resolved, ck = r, None
        if step:
            resolved, ck, _ = resolve_run(recipe_path=None, overrides=[], outdir=run, resume="auto")
        result = train(resolved, run, resume_from=ck, max_steps=args.every, show_progress=False)
        step = result.step
        train_minutes = (time.time() - start) / 60
        fake = generated(run / "latest.pt", args.num, label_pool)
        fid = frechet_distance(statistics(features(net, fake)), ref)
        rows.append((step, result.images_seen / 1000, train_minutes, fid))
        print(f"step {step:5d}  kimg {result.images_seen / 1000:6.1f}  {train_minutes:6.1f} min  "
              f"digits-FID {fid:8.2f}  ({time.time() - t0:.0f} s)", flush=True)
    # FID of real data against itself split in halves: the floor for this feature extractor
    half = len(real) // 2
    floor = frechet_distance(statistics(features(net, real[:half])), statistics(features(net, real[half:])))
    print("\n| step | kimg | minutes (2-core CPU) | digits-FID |\n|---|---|---|---|")
    for s, k, m, f in rows:
        print(f"| {s} | {k:.1f} | {m:.1f} | {f:.2f} |")
    print(f"\nreal-vs-real floor (two halves of digits): {floor:.2f}")


if __name__ == "__main__":
    main()
