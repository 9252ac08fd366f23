"""Section ``fid``: nat-gan's FID path vs the official write-PNGs-then-score path on the same images."""

from __future__ import annotations

import os
import warnings

import torch

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import GOALS, build_generator


class TinyFeatures(torch.nn.Module):
    """Smoke-test stand-in for Inception: resize to 299 like pytorch-fid, then 2x2 mean colours (12 numbers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def fid_section(ctx: SectionContext) -> None:
    """nat-gan's FID path vs the official write-PNGs-then-score path on the same images; random-weight Inception."""
    import bench_fid

    cuda = ctx.device.type == "cuda"
    num = 2000 if cuda and ctx.remaining() >= 55 else 1000 if cuda else 16
    G = build_generator("stylenat", 256, ctx).to(ctx.device).eval()
    argv = ["--num", str(num), "--num-ref", str(num), "--random-inception", "--mode", "legacy_pytorch",
            "--device", str(ctx.device), "--workers", str(min(8, os.cpu_count() or 1) if cuda else 0)]
    if not cuda:
        argv += ["--batch", "4"]
    extractor = None
    if ctx.smoke:  # a 12-number "Inception" (same resize): both pipelines end to end in seconds on a CPU
        from natgan.metrics import FeatureExtractor

        argv = [a for a in argv if a != "--random-inception"]
        extractor = FeatureExtractor(TinyFeatures().to(ctx.device), mode="legacy_pytorch", name=None,
                                     device=ctx.device)
    args = bench_fid.parse_args(argv)

    def record_ours(ours: dict) -> None:  # before the official path, which may meet the cap
        ctx.record("ours, cold (reference features computed)", ours["cold_s"], "s",
                   note=f"{num} images, batch {ours['batch']}")
        ctx.record("ours, cached reference", ours["cached_s"], "s")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bench_fid.compare(G, f"stylenat-{G.resolution} random init", args, ctx.device, ctx.workdir,
                                   extractor=extractor, on_ours=record_ours)
    ours, official = result["ours"], result["official"]
    ctx.record("official (batch 4, PNGs, then score)", official["total_s"], "s",
               note=f"generate + write {official['generate_and_write_s']:.1f} s, score {official['score_s']:.1f} s")
    ctx.record("FID speed-up vs official (cold)", result["speedup_cold"], "x", at_least=GOALS["fid_speedup"])
    rel = abs(ours["fid"] - official["fid"]) / max(abs(official["fid"]), 1e-12)
    ctx.record("FID ours vs official, relative difference", rel, at_most=GOALS["fid_agreement_rel"],
               note=f"ours {ours['fid']:.6g}, official {official['fid']:.6g} (same seeds, random-weight Inception)")
