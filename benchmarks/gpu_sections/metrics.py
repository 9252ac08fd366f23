"""Section ``metrics``: the metric set together vs FID alone (``benchmarks/bench_metrics.py``)."""

from __future__ import annotations

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import TINY


def metrics_section(ctx: SectionContext) -> None:
    """``fid,kid,pr,dc,is`` together vs FID alone (``benchmarks/bench_metrics.py``), random-weight Inception and
    VGG16 (same compute as the real ones). 50k samples when the budget left allows, else 10k, and it says so."""
    from bench_metrics import measure

    if ctx.smoke or ctx.device.type != "cuda":
        n, res, config = 12, 16, TINY["stylegan2"]   # IS needs at least 10 images
    else:
        n, res, config = (50_000 if ctx.remaining() >= 600 else 10_000), 256, None
    workdir = ctx.workdir / "metrics"
    workdir.mkdir(parents=True, exist_ok=True)
    r = measure(str(ctx.device), n=n, res=res, model="stylegan2", separately=False, workdir=workdir,
                model_config=config)
    scaled = "" if n == 50_000 or ctx.smoke or ctx.device.type != "cuda" else \
        " (50k needs about 10 minutes: run with --only metrics --budget 900)"
    ctx.record("fid alone", r["fid_only_s"], "s", note=f"{n} StyleGAN2-{res} samples vs {n} reference images{scaled}")
    ctx.record("fid,kid,pr,dc,is together", r["all_five_s"], "s", note="features shared across metrics")
    ctx.record("metric set / fid alone", r["ratio_all_vs_fid"], "x")
