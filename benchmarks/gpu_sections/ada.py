"""Section ``ada``: training img/s with ADA and DiffAugment vs no augmentation (``benchmarks/bench_ada.py``)."""

from __future__ import annotations

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import GOALS, ROOT


def ada_section(ctx: SectionContext) -> None:
    """Training img/s with ADA ``bgc`` (fixed p = 0.6) and DiffAugment vs no augmentation, the same steps on
    synthetic batches (``benchmarks/bench_ada.py``): the ffhq256 recipe on a GPU, the demo recipe elsewhere."""
    from bench_ada import CONFIGS, measure

    cuda = ctx.device.type == "cuda" and not ctx.smoke
    recipe = ROOT / "recipes" / ("ffhq256.toml" if cuda else "demo.toml")
    configs = {name: CONFIGS[name] for name in ("none", "ada bgc p=0.6", "diffaug")}
    steps, rounds, warmup = (8, 3, 2) if cuda else (1, 1, 1)
    r = measure(str(ctx.device), steps=steps, rounds=rounds, warmup=warmup, recipe=str(recipe), configs=configs)
    note = f"{recipe.name}, batch {r['batch']}, {steps} steps x {rounds} rounds (median)"
    ctx.record("training without augmentation", r["img_per_s"]["none"], "img/s", note=note)
    ctx.record("ADA bgc (p = 0.6) slower than none", r["overhead_pct"]["ada bgc p=0.6"], "%",
               at_most=GOALS["ada_overhead_pct"], note=f"{r['img_per_s']['ada bgc p=0.6']:.1f} img/s")
    ctx.record("DiffAugment slower than none", r["overhead_pct"]["diffaug"], "%",
               note=f"{r['img_per_s']['diffaug']:.1f} img/s")
