"""Peer ``styleswin``: microsoft/StyleSwin's G and D as ``train_styleswin.py`` builds them (FFHQ flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from natgan.bench.peers import OfficialD, OfficialG

from peers.transformer import narrow_channel_tables, official_parser, save_styleswin_format, widths_note


def styleswin_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path, *,
                   width_divisor: int = 1) -> tuple[OfficialG, OfficialD, Path, Callable]:
    """Official StyleSwin G/D as ``train_styleswin.py`` builds them (FFHQ flags, spectral-norm D) and the
    checkpoint that script writes."""
    from models import discriminator as official_d, generator as official_g  # noqa: E402  (the checkout)

    narrow_channel_tables(official_g, {"Generator": "in_channels"}, width_divisor)
    narrow_channel_tables(official_d, {"Discriminator": "channels"}, width_divisor)
    flags = ["--size", size, "--style_dim", style_dim, "--G_channel_multiplier", channel_multiplier,
             "--D_channel_multiplier", channel_multiplier, "--batch", 4, "--iter", 1_000_000, "--r1", 10,
             "--D_lr", 0.0002, "--D_sn", "--ttur", "--bcr", "--lr_decay", "--lr_decay_start_steps", 775_000]
    args = official_parser(root / "train_styleswin.py").parse_args([str(f) for f in flags])
    # The script's own post-processing (it hard-codes n_mlp = 8; here the n_mlp the model is built with).
    args.distributed, args.latent, args.n_mlp, args.g_reg_every = False, 4096, n_mlp, 10_000_000
    torch.manual_seed(0)
    g = official_g.Generator(args.size, args.style_dim, args.n_mlp, channel_multiplier=args.G_channel_multiplier,
                             lr_mlp=args.lr_mlp, enable_full_resolution=args.enable_full_resolution,
                             use_checkpoint=args.use_checkpoint).eval()
    d = official_d.Discriminator(args.size, channel_multiplier=args.D_channel_multiplier, sn=args.D_sn).eval()
    path = save_styleswin_format(g, d, args, workdir)
    notes = {"official_widths": widths_note(width_divisor)}
    G = OfficialG(g, lambda net, z: net(z)[0], style_dim, size, notes)
    return G, OfficialD(d, lambda net, x: net(x)), path, G.call
