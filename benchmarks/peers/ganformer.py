"""Peer ``ganformer``: gansformer's PyTorch networks with ``--ganformer-default`` settings and their snapshot pickle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

from natgan.bench.peers import OfficialD, OfficialG

from peers.official import redraw, write_snapshot


def ganformer_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path
                   ) -> tuple[OfficialG, OfficialD, Path, Callable]:
    """Official GANformer G/D with ``--ganformer-default`` settings (k = 16 + 1 components of ``style_dim / 16``)
    and their ``training_loop.save_nets`` snapshot."""
    ganformer_stand_ins()
    import dnnlib  # noqa: E402

    components = 16
    d = style_dim // components
    common = dict(c_dim=0, img_resolution=size, img_channels=3)
    synthesis = dict(architecture="resnet", style=True, local_noise=True, transformer=True, use_pos=True, num_heads=1,
                     start_res=0, end_res=8, norm="layer", integration="mul", kmeans=True, kmeans_iters=1,
                     pos_type="sinus", pos_init="uniform", pos_directions_num=2,
                     channel_base=16384 * channel_multiplier, channel_max=512)
    mapping = dict(resnet=True, ltnt2ltnt=True, transformer=True, use_pos=True, num_heads=1, num_layers=n_mlp)
    torch.manual_seed(0)
    g = dnnlib.util.construct_class_by_name(class_name="training.networks.Generator", z_dim=d, w_dim=d,
                                            k=components + 1, mapping_kwargs=dnnlib.EasyDict(mapping),
                                            synthesis_kwargs=dnnlib.EasyDict(synthesis), **common).eval()
    disc = dnnlib.util.construct_class_by_name(class_name="training.networks.Discriminator",
                                               channel_base=16384 * channel_multiplier, channel_max=512,
                                               epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4), **common).eval()
    redraw(g, disc)
    path = write_snapshot(workdir / "network-snapshot-000000.pkl", {"dataset_args": {"mirror_augment": True}},
                          (("G", g), ("D", disc), ("Gs", g)))

    def gen_call(net, z, mode="random"):
        return net(z=z.view(z.shape[0], components + 1, d), c=None, noise_mode=mode)[0]

    G = OfficialG(g, gen_call, (components + 1) * d, size)
    D = OfficialD(disc, lambda net, x: net(x, None))
    return G, D, path, lambda net, z: gen_call(net, z, "const")


def ganformer_stand_ins() -> None:
    """GANformer's dnnlib/training.misc import seaborn, termcolor and gdown for plots, colours and downloads
    only; where they are not installed, empty stand-ins let the networks import (none of them is called)."""
    import importlib.util
    import types

    for name in ("seaborn", "termcolor", "gdown"):
        if importlib.util.find_spec(name) is None and name not in sys.modules:
            module = types.ModuleType(name)
            module.colored = lambda text, *args, **kwargs: text
            sys.modules[name] = module
