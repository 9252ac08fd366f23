"""Peer ``rosinality``: rosinality/stylegan2-pytorch's ``model.py`` G and D, saved as its ``train.py`` saves them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from natgan.bench.peers import OfficialD, OfficialG

from peers.official import redraw


def rosinality_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path
                    ) -> tuple[OfficialG, OfficialD, Path, Callable]:
    """Official rosinality G/D (seeded) and the train.py-style checkpoint holding their weights."""
    import model as ros  # noqa: E402  (the official model.py, from the checkout on sys.path)

    torch.manual_seed(0)
    g = ros.Generator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier).eval()
    d = ros.Discriminator(size, channel_multiplier=channel_multiplier).eval()
    redraw(g, d)
    path = workdir / "rosinality.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
                "args": argparse.Namespace(size=size, latent=style_dim, n_mlp=n_mlp,
                                           channel_multiplier=channel_multiplier, arch="stylegan2")}, path)
    G = OfficialG(g, lambda net, z: net([z])[0], style_dim, size)
    D = OfficialD(d, lambda net, x: net(x))
    const = lambda net, z: net([z], randomize_noise=False)[0]  # noqa: E731
    return G, D, path, const
