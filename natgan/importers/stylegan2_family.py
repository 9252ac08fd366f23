"""What the StyleGAN2-family importers (rosinality, stylegan2-ada, GANformer) share once names are ours.

Each format reader turns its file into an :class:`Imported` (state dicts already renamed to nat-gan's
module names, the model configuration it read or inferred, the training settings it found); this module
rebuilds the registered model from that configuration, checks every tensor against it (missing,
unexpected and misshapen keys and differing constant buffers are errors naming the key), and writes the
v1 checkpoint, so the three readers differ only in how they read and rename.

For ``stylegan2`` the configuration is inferred from the weight shapes (:func:`plan_stylegan2`), because
neither rosinality's nor NVlabs' files state their channel table in a form nat-gan could trust blindly; the
widths are stored as explicit per-level lists (``channels``, ``d_channels``), whatever rule made them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import torch

from natgan import recipe as recipe_mod
from natgan.checkpoint import make_checkpoint
from natgan.errors import CheckpointError, ConfigError
from natgan.importers.common import convert_state
from natgan.models import get_spec

# Official StyleGAN2 code trains with fp32 (TF32 where the GPU allows); EMA half-life 10 kimg at batch 32.
_STYLEGAN2_TRAIN_DEFAULTS = {"ttur": False, "bcr": False, "bcr_real": 0.0, "bcr_fake": 0.0, "d_clip": 0.0,
                             "lr_decay": False, "precision": "tf32"}


@dataclasses.dataclass
class Imported:
    """A format reader's result, in nat-gan names; :func:`assemble` turns it into a v1 checkpoint."""

    model_name: str
    model: dict[str, Any]                       # model config fields (validated by the registry)
    g_ema: dict[str, torch.Tensor]
    g: dict[str, torch.Tensor] | None = None
    d: dict[str, torch.Tensor] | None = None
    optim: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    w_avg: torch.Tensor | None = None           # truncation centre stored by the official code, [w_dim]
    step: int = 0
    computed_buffers: bool = False              # constant buffers the file lacks come from the rebuilt model
    assumptions: list[str] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def is_noise_buffer(name: str) -> bool:
    """The stored per-layer noise maps (``noises.noise_i``, GANformer's ``*.noise_const``) are data of the file,
    not constants to check."""
    return name.startswith("noises.") or name.endswith(".noise_const")


def _shape(sd: dict[str, torch.Tensor], key: str, src: str, which: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{src}: {which}: missing key '{key}'")
    return tuple(sd[key].shape)


def discriminator_widths(d: dict[str, torch.Tensor], resolution: int, src: str) -> list[int]:
    """Widths at 4, 8, ..., ``resolution`` of a StyleGAN2 residual D in nat-gan (rosinality) names, read from
    its weight shapes: fromRGB gives the top width, each ResBlock's down conv the width below it."""
    levels = int(math.log2(resolution)) - 1
    widths = {resolution: _shape(d, "convs.0.0.weight", src, "discriminator")[0],
              4: _shape(d, "final_conv.0.weight", src, "discriminator")[0]}
    for j in range(1, levels):
        widths[resolution >> j] = _shape(d, f"convs.{j}.conv2.1.weight", src, "discriminator")[0]
    return [widths[4 * 2 ** i] for i in range(levels)]


def width_fields(g_widths: list[int], d: dict[str, torch.Tensor] | None, resolution: int, src: str
                 ) -> dict[str, Any]:
    """The explicit width lists of a stylegan2/ganformer config (``d_channels`` only where D differs from G).

    Read from the weight shapes rather than fitted to a rule, so any table the official constructors can
    produce (``channel_base``/``channel_max``/``fmaps``, G and D built apart) imports, and a reader of the
    imported file's config sees the widths themselves.
    """
    fields: dict[str, Any] = {"channels": list(g_widths)}
    if d is not None:
        d_widths = discriminator_widths(d, resolution, src)
        if d_widths != g_widths:
            fields["d_channels"] = d_widths
    return fields


def plan_stylegan2(g: dict[str, torch.Tensor], d: dict[str, torch.Tensor] | None, src: str,
                   size: int | None = None) -> dict[str, Any]:
    """StyleGAN2 config from a generator (and discriminator) state dict in rosinality/nat-gan names."""
    levels = sum(1 for k in g if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
    resolution = 4 * 2 ** levels
    if size is not None and size != resolution:
        raise CheckpointError(f"{src}: --size is {size}, but the generator has {levels + 1} levels "
                              f"(4x4 ... {resolution}x{resolution})")
    n_mlp = sum(1 for k in g if re.fullmatch(r"style\.\d+\.weight", k))
    w_dim, mapping_in = _shape(g, "style.1.weight", src, "generator")
    num_classes, embed_dim = (0, 0)
    if "label_embed.embed.weight" in g:         # class-conditional: [z, embed(c)] enters the mapping
        embed_dim, num_classes = _shape(g, "label_embed.embed.weight", src, "generator")
        if embed_dim != w_dim:
            raise CheckpointError(f"{src}: generator: the label embedding is {embed_dim} wide and w {w_dim}; "
                                  f"nat-gan's stylegan2 embeds labels in w_dim (the official default)")
    z_dim = mapping_in - embed_dim
    if w_dim != z_dim:
        raise CheckpointError(f"{src}: generator: z has {z_dim} dims and w {w_dim}; nat-gan's stylegan2 uses "
                              f"one size for both (style_dim), so this mapping network cannot be expressed")
    widths = [_shape(g, "input.input", src, "generator")[1]]
    widths += [_shape(g, f"convs.{2 * k}.conv.weight", src, "generator")[1] for k in range(levels)]
    return {"resolution": resolution, "style_dim": w_dim, "n_mlp": n_mlp, "num_classes": num_classes,
            **width_fields(widths, d, resolution, src)}


def stylegan2_train_settings(**found: Any) -> dict[str, Any]:
    """A ``[train]`` table: what the file says (``None`` values dropped) over the StyleGAN2 code's fixed choices."""
    return {**_STYLEGAN2_TRAIN_DEFAULTS, **{k: v for k, v in found.items() if v is not None}}


def _with_constants(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``sd`` plus the constant buffers (FIR kernels) nat-gan computes, for formats that do not store them."""
    out = dict(sd)
    saved = model.state_dict()                      # persistent buffers only
    for name, _ in model.named_buffers():
        if name in saved and name not in out and not is_noise_buffer(name):
            out[name] = saved[name].detach().clone()
    return out


def assemble(imp: Imported, src: str, kind: str) -> dict[str, Any]:
    """Rebuild the model from ``imp.model``, check every tensor against it, return the v1 checkpoint dict."""
    spec = get_spec(imp.model_name)
    try:
        config = spec.make_config(imp.model, source=f"{src} (rebuilt architecture)")
    except ConfigError as exc:
        raise CheckpointError(f"{src}: nat-gan cannot express this configuration: {exc}") from None
    model_cfg = dataclasses.asdict(config)
    generator, discriminator = spec.builder(config)
    same = lambda key: key  # noqa: E731  (names are already ours)
    if imp.computed_buffers:
        imp.g_ema, imp.g = (None if sd is None else _with_constants(sd, generator) for sd in (imp.g_ema, imp.g))
        imp.d = None if imp.d is None else _with_constants(imp.d, discriminator)
    weights = {"G_ema": convert_state(imp.g_ema, generator, same, src, "G_ema", is_noise_buffer)}
    if imp.g is not None:
        weights["G"] = convert_state(imp.g, generator, same, src, "G", is_noise_buffer)
    else:
        imp.assumptions.append("no training generator in the file: G starts as a copy of G_ema")
        weights["G"] = weights["G_ema"]
    if imp.d is not None:
        weights["D"] = convert_state(imp.d, discriminator, same, src, "D")
    else:
        imp.assumptions.append("no discriminator in the file: D is freshly initialised")
    raw = {"model": {"name": imp.model_name, **model_cfg}, "data": {"path": "", **imp.data},
           "train": imp.train, "eval": imp.eval}
    try:
        recipe = recipe_mod.from_dict(raw, source=f"{src} (official training settings)").to_dict()
    except ConfigError as exc:
        raise CheckpointError(f"cannot express the official training settings as a recipe: {exc}") from None
    extra: dict[str, Any] = {"import": {"source": src, "from": kind, "assumptions": list(imp.assumptions),
                                        "layout": imp.info.pop("layout", "names mapped one to one"), **imp.info}}
    if imp.w_avg is not None:
        if tuple(imp.w_avg.shape) != (generator.w_dim,):
            raise CheckpointError(f"{src}: truncation centre has shape {tuple(imp.w_avg.shape)}, "
                                  f"expected ({generator.w_dim},)")
        extra["w_avg"] = imp.w_avg.detach().to(torch.float32).cpu()
    batch = recipe["train"]["batch"]
    return make_checkpoint(model_name=imp.model_name, model_config=model_cfg, recipe=recipe,
                           normalization=generator.normalization, G=weights["G"], G_ema=weights["G_ema"],
                           D=weights.get("D"), optim=imp.optim, step=imp.step, images_seen=imp.step * batch,
                           extra=extra)
