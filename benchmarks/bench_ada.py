"""ADA overhead: training images/s of the demo StyleNAT with and without D augmentation.

Times whole training steps (the update rule of the real trainer: D step, lazy R1, G step, EMA) on
synthetic batches, so data loading and checkpointing do not enter; the configurations are interleaved
round by round so that a noisy, shared machine slows all of them alike. ``measure`` is importable
(the GPU acceptance script calls it); the CLI prints a markdown table.

    .venv/bin/python benchmarks/bench_ada.py --device cpu --steps 10 --rounds 3
    .venv/bin/python benchmarks/bench_ada.py --recipe recipes/demo_conditional.toml   # class-conditional

A class-conditional recipe gets seeded uniform random class labels with its synthetic reals, and fake labels drawn
from a uniform pool, as the trainer draws them from the dataset's labels.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import cycle

import torch

from natgan import recipe as recipes

CONFIGS = {
    "none": ["train.augment=\"none\""],
    "ada bgc p=0.2": ["train.augment=\"fixed\"", "train.augment_pipe=\"bgc\"", "train.augment_p=0.2"],
    "ada bgc p=0.6": ["train.augment=\"fixed\"", "train.augment_pipe=\"bgc\"", "train.augment_p=0.6"],
    "ada bgc p=1": ["train.augment=\"fixed\"", "train.augment_pipe=\"bgc\"", "train.augment_p=1.0"],
    "diffaug": ["train.augment=\"diffaug\""],
}


def _trainer(recipe_path: str, device: str, overrides: list[str], outdir: str):
    from natgan.train.trainer import Trainer

    recipe = recipes.load(recipe_path, [f"train.device=\"{device}\"", *overrides])
    return Trainer(recipe, outdir, show_progress=False)


def measure(device: str = "cpu", steps: int = 10, rounds: int = 3, warmup: int = 2,
            recipe: str = "recipes/demo.toml", configs: dict[str, list[str]] | None = None,
            clock: str = "wall") -> dict:
    """img/s per configuration (median over rounds) and the slowdown of each vs ``none`` in %.

    ``clock = "cpu"`` times with this process's CPU time instead of wall time: with one torch thread
    (``OMP_NUM_THREADS=1``) that is what a step costs even while other jobs share the machine.

    Returns ``{"device", "batch", "steps", "rounds", "img_per_s": {name: float}, "overhead_pct": {name: float}}``.
    """
    configs = configs or CONFIGS
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: _trainer(recipe, device, o, f"{tmp}/{i}") for i, (name, o) in enumerate(configs.items())}
        any_t = next(iter(trainers.values()))
        batch, res = any_t.plan.global_batch, any_t.G.resolution
        g = torch.Generator().manual_seed(0)
        reals = [torch.rand(any_t.plan.micro, 3, res, res, generator=g).mul(2).sub(1).to(any_t.device)
                 for _ in range(4)]
        k = int(getattr(any_t.G, "num_classes", 0) or 0)
        if k:  # conditional: (images, labels) as the trainer's data yields, and a pool for the fake labels
            reals = [(x, torch.randint(k, (len(x),), generator=g).to(any_t.device)) for x in reals]
            for t in trainers.values():
                t.update.label_pool = torch.arange(k)

        def run(t, n: int) -> float:
            data = cycle(reals)
            sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)
            sync()
            now = time.process_time if clock == "cpu" else time.perf_counter
            start = now()
            for _ in range(n):
                t.update.step(data, t.step)
                t._update_ema()
                t.daug.after_step(batch)
                t.step += 1
            sync()
            return now() - start

        for t in trainers.values():
            run(t, warmup)
        rates: dict[str, list[float]] = {name: [] for name in trainers}
        names = list(trainers)
        for r in range(rounds):  # each round starts at another configuration, so no position is favoured
            for name in names[r % len(names):] + names[:r % len(names)]:
                rates[name].append(steps * batch / run(trainers[name], steps))
    median = {name: sorted(r)[len(r) // 2] for name, r in rates.items()}
    base = median[next(iter(median))]
    return {"device": device, "batch": batch, "steps": steps, "rounds": rounds, "clock": clock, "img_per_s": median,
            "overhead_pct": {name: 100 * (base / v - 1) for name, v in median.items()},
            **({"labels": f"class-conditional ({k} classes): seeded uniform random labels for reals and fakes"}
               if k else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--recipe", default="recipes/demo.toml")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this process's CPU time (use with OMP_NUM_THREADS=1 on a shared machine)")
    args = ap.parse_args()
    result = measure(args.device, args.steps, args.rounds, recipe=args.recipe, clock=args.clock)
    print(f"\n{args.recipe}, batch {result['batch']}, {args.steps} steps x {args.rounds} rounds on {args.device}, "
          f"{args.clock} clock, {torch.get_num_threads()} threads\n")
    print("| D augmentation | img/s | slower than none |\n|---|---|---|")
    if result.get("labels"):
        print(f"labels: {result['labels']}\n")
    for name, rate in result["img_per_s"].items():
        print(f"| {name} | {rate:.1f} | {result['overhead_pct'][name]:+.1f} % |")


if __name__ == "__main__":
    main()
