"""Peer ``stylegan2-ada``: NVlabs/stylegan2-ada-pytorch (``--cfg=stylegan2 --fp32``) and its snapshot pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from natgan.bench.peers import OfficialD, OfficialG

from peers.official import redraw, write_snapshot


def stylegan2_ada_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path
                       ) -> tuple[OfficialG, OfficialD, Path, Callable]:
    """Official stylegan2-ada G/D (``--cfg=stylegan2 --fp32`` settings) and their training_loop.py snapshot."""
    import dnnlib  # noqa: E402

    common = dict(c_dim=0, img_resolution=size, img_channels=3)
    torch.manual_seed(0)
    g = dnnlib.util.construct_class_by_name(
        class_name="training.networks.Generator", z_dim=style_dim, w_dim=style_dim,
        mapping_kwargs=dnnlib.EasyDict(num_layers=n_mlp),
        synthesis_kwargs=dnnlib.EasyDict(channel_base=16384 * channel_multiplier, channel_max=512,
                                         num_fp16_res=0, conv_clamp=None), **common).eval()
    d = dnnlib.util.construct_class_by_name(
        class_name="training.networks.Discriminator", channel_base=16384 * channel_multiplier, channel_max=512,
        num_fp16_res=0, conv_clamp=None, epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4), **common).eval()
    redraw(g, d)
    path = write_snapshot(workdir / "network-snapshot-000000.pkl", {"training_set_kwargs": {"xflip": False}},
                          (("G", g), ("D", d), ("G_ema", g)))
    empty = torch.zeros(0)

    def gen_call(net, z, mode="random"):
        return net(z, empty.new_zeros(z.shape[0], 0).to(z), noise_mode=mode)

    G = OfficialG(g, gen_call, style_dim, size)
    D = OfficialD(d, lambda net, x: net(x, empty.new_zeros(x.shape[0], 0).to(x)))
    return G, D, path, lambda net, z: gen_call(net, z, "const")
