"""Peer ``stylenat``: SHI-Labs/StyleNAT's G (Hydra layout) and D with its FFHQ-256 run config; NA on the
NATTEN 0.17 stand-in (``benchmarks/natten_v017.py``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import natten_v017
import torch

from natgan.bench.peers import OfficialD, OfficialG

from peers.transformer import narrow_channel_tables, save_styleswin_format, widths_note


# StyleNAT's conf/runs/ffhq_256.yaml (the official FFHQ-256 run), flattened to the StyleSwin-style field names
# its released checkpoints' ``args`` use; kernels/dilations follow its per-level pattern (see stylenat_levels).
STYLENAT_FFHQ = {
    "block_type": "nat", "lr_mlp": 0.01, "mlp_ratio": 4, "min_heads": 4, "qkv_bias": True, "qk_scale": None,
    "proj_drop": 0.0, "attn_drop": 0.0, "use_checkpoint": False, "enable_full_resolution": 8, "G_lr": 0.00004,
    "D_lr": 0.0002, "D_sn": True, "d_reg_every": 16, "iter": 1_000_000, "batch": 8, "use_flip": True, "ttur": True,
    "r1": 10.0, "bcr": True, "bcr_fake_lambda": 10.0, "bcr_real_lambda": 10.0, "beta1": 0.0, "beta2": 0.99,
    "lr_decay": True, "lr_decay_start_steps": 775_000, "distributed": False,
}


def stylenat_levels(size: int) -> tuple[list[list[int]], list[list[int]]]:
    """ffhq_256.yaml's kernels ``[[3], [7], [7], ...]`` and dilations ``[[1], [1], [1, 2], [1, 4], ...]``
    (``[1, res/8]`` from 16 px on), for the levels 4 .. ``size``."""
    resolutions = [4 * 2 ** i for i in range(int(math.log2(size)) - 1)]
    return ([[3] if res == 4 else [7] for res in resolutions],
            [[1] if res <= 8 else [1, res // 8] for res in resolutions])


def stylenat_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path, *,
                  width_divisor: int = 1) -> tuple[OfficialG, OfficialD, Path, Callable]:
    """Official StyleNAT G (Hydra layout) and D with the FFHQ-256 run config, saved in the released files'
    format; its NA calls go to :mod:`natten_v017` (see module docstring)."""
    from models import discriminator as official_d, generator as official_g  # noqa: E402  (the checkout)

    narrow_channel_tables(official_g, {"Generator": "in_channels"}, width_divisor)
    narrow_channel_tables(official_d, {"Discriminator": "channels"}, width_divisor)
    kernels, dilations = stylenat_levels(size)
    args = argparse.Namespace(**STYLENAT_FFHQ, size=size, style_dim=style_dim, n_mlp=n_mlp, kernels=kernels,
                              dilations=dilations, channel_multiplier=channel_multiplier,
                              D_channel_multiplier=channel_multiplier)
    d_args = argparse.Namespace(channel_multiplier=channel_multiplier, sn=args.D_sn, blur_kernel=[1, 3, 3, 1],
                                ssd=False)
    torch.manual_seed(0)
    g = official_g.Generator(args, size, legacy=False).eval()
    d = official_d.Discriminator(d_args, size).eval()
    path = save_styleswin_format(g, d, args, workdir)
    notes = {"official_widths": widths_note(width_divisor), "official_na": natten_v017.STAND_IN_NOTE + (
        "; the official StyleNAT timings measure the official model code around this stand-in, not NATTEN's "
        "kernels")}
    G = OfficialG(g, lambda net, z: net(z)[0], style_dim, size, notes)
    return G, OfficialD(d, lambda net, x: net(x)), path, G.call
