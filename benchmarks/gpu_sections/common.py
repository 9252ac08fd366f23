"""What several acceptance sections share: the goals, the tiny ``--smoke`` models, device helpers."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from natgan.bench.acceptance import SectionContext

ROOT = Path(__file__).resolve().parents[2]

GOALS = {
    "stylenat_b1_tf32_img_s": 100.0,    # 3x the paper's 32.56 img/s (official protocol: batch 1, TF32)
    "stylenat_b32_bf16_img_s": 950.0,   # H100-class GPU
    "train_img_s_per_gpu": 60.0,        # real loop, ffhq256 recipe, R1 + bCR on
    "fid_speedup": 5.0,                 # vs the official write-PNGs-at-batch-4-then-score path
    "fid_agreement_rel": 1e-2,          # |ours - official| / official
    "na_fp32_err": 2e-3,                # max |backend - float64 CPU| / max(1, |reference|), as tests/test_na_gpu.py
    "na_bf16_err": 5e-2,
    "ada_overhead_pct": 15.0,           # ADA bgc vs no augmentation, training img/s (issue 13)
}

# Tiny configurations for --smoke: the same code paths at sizes a 2-core CPU runs in seconds.
TINY = {
    "stylenat": dict(style_dim=32, n_mlp=2, channels=[32, 32, 32, 32], min_heads=2, kernel_size=3,
                     d_channels=[16] * 4),
    "styleswin": dict(style_dim=32, n_mlp=2, channels=[32, 32, 32, 32], min_heads=4, d_channels=[16] * 4),
    "hit-b": dict(low_res_stages=2, widths=[32, 32, 16], heads=[4, 2, 2], depths=[1, 1, 2], block_sizes=[4, 4],
                  z_dim=16, d_channel_multiplier=1, d_max_channels=16),
    "stylegan2": dict(style_dim=16, n_mlp=2, channel_max=16),
    "ganformer": dict(components=4, latent_dim=8, channel_max=16, attn_max_res=8, mapping_layers=4),
}
SMOKE_RES = {256: 32, 1024: 64}
PAPER_RECIPES = {("stylenat", 256): "ffhq256.toml", ("stylenat", 1024): "ffhq1024.toml"}


def model_config(name: str, res: int, ctx: SectionContext):
    """The validated config of ``name`` at paper resolution ``res``: the paper model on a GPU; in smoke mode
    a tiny one at 32 (for 256) or 64 (for 1024) px."""
    from natgan.models import get_spec

    if not ctx.smoke:
        recipe = PAPER_RECIPES.get((name, res))
        if recipe is not None:  # the released models' configurations
            from natgan import recipe as recipes

            return recipes.load(ROOT / "recipes" / recipe).model
        return get_spec(name).make_config({"resolution": res})
    cfg = dict(TINY[name], resolution=SMOKE_RES[res])
    if name == "stylenat" and res == 1024:
        cfg.update(channels=[32] * 5, d_channels=[16] * 5)
    return get_spec(name).make_config(cfg)


def build_generator(name: str, res: int, ctx: SectionContext, config=None) -> torch.nn.Module:
    from natgan.models import create

    return create(name, config=config or model_config(name, res, ctx)).generator


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def mb(n) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def free_memory(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
