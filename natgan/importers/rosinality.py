"""Import rosinality/stylegan2-pytorch files into nat-gan's ``stylegan2``.

Two layouts exist in the wild:

* training checkpoints written by ``train.py`` every 10k steps (``000000.pt`` … ): ``g``, ``d``, ``g_ema``,
  ``g_optim``, ``d_optim``, ``args`` (an ``argparse.Namespace``) and ``ada_aug_p``;
* converted-weights files written by ``convert_weight.py`` (the form most released FFHQ/church/cat
  models circulate in): ``g_ema`` and ``latent_avg`` only (plus ``d`` when converted with ``--disc``).

nat-gan's StyleGAN2 modules carry rosinality's names and parameter layouts, so the state dicts map key for
key; the architecture (resolution, mapping depth, channel table) is read from the weight shapes, the training
settings from ``args``. The file is read with ``weights_only=True`` and only ``argparse.Namespace`` allowed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from natgan.errors import CheckpointError
from natgan.importers.common import (ASSUMED_GPUS, convert_optimizer, load_official_container, parameter_sources,
                                     plain, step_from_filename, strip_module)
from natgan.importers.stylegan2_family import Imported, assemble, plan_stylegan2, stylegan2_train_settings
from natgan.models import get_spec

KIND = "rosinality"


def looks_like(obj: Any) -> bool:
    """True for a rosinality container: ``g_ema`` with StyleGAN2 keys (``to_rgb1``, ``noises.noise_0``)."""
    g = obj.get("g_ema") if isinstance(obj, dict) else None
    return isinstance(g, dict) and any(str(k).endswith("to_rgb1.conv.weight") for k in g)


def _args(obj: dict, src: str) -> dict[str, Any]:
    args = obj.get("args")
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, dict):
        return dict(args)
    raise CheckpointError(f"{src}: key 'args': expected an argparse.Namespace, got {type(args).__name__}")


def _train_settings(args: dict[str, Any], assumptions: list[str]) -> dict[str, Any]:
    """rosinality ``train.py`` arguments -> nat-gan ``[train]`` (same lazy-regularisation Adam rules)."""
    def num(key: str, tp: type) -> Any:
        value = args.get(key)
        return tp(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    per_gpu = num("batch", int)
    batch = {}
    if per_gpu:
        gpus = ASSUMED_GPUS if args.get("distributed") else 1
        if args.get("distributed"):
            assumptions.append(f"args.batch = {per_gpu} per GPU; assumed {ASSUMED_GPUS} GPUs "
                               f"(global batch {per_gpu * gpus})")
        batch = {"batch": per_gpu * gpus, "batch_per_gpu": per_gpu}
    if args.get("augment"):
        assumptions.append("the run used rosinality's adaptive augmentation (--augment); the imported recipe "
                           "leaves it off (train.augment = \"none\"): --set train.augment=ada --set "
                           "train.augment_p=<p> continues with nat-gan's ADA (ada_aug_p is kept under extra.import)")
    lr = num("lr", float)
    iterations = num("iter", int)
    return stylegan2_train_settings(
        **batch, iterations=iterations, g_lr=lr, d_lr=lr, beta1=0.0, beta2=0.99, r1=num("r1", float),
        r1_every=num("d_reg_every", int), pl_weight=num("path_regularize", float),
        g_reg_every=num("g_reg_every", int), style_mixing=num("mixing", float),
        lr_decay_start=iterations, checkpoint_every=10_000)


def import_rosinality(source: str | Path | dict, size: int | None = None, *, step: int | None = None
                      ) -> dict[str, Any]:
    """Convert a rosinality training checkpoint or converted-weights file (path or loaded dict) to v1."""
    src, obj = ("<dict>", source) if isinstance(source, dict) else (str(source), load_official_container(source))
    if not isinstance(obj, dict) or not isinstance(obj.get("g_ema"), dict):
        found = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{src}: not a rosinality stylegan2-pytorch file (expected a dict with 'g_ema'; "
                              f"found {found or 'nothing'})")
    args = _args(obj, src)
    if args.get("arch", "stylegan2") != "stylegan2":
        raise CheckpointError(f"{src}: args.arch is {args['arch']!r}: rosinality's {args['arch']} generator is "
                              f"not StyleGAN2 and has no nat-gan counterpart")
    states = {key: strip_module(obj[key], f"{src}: key '{key}'") for key in ("g_ema", "g", "d")
              if obj.get(key) is not None}
    assumptions: list[str] = ["mapping lr multiplier not stored: used rosinality's fixed 0.01"]
    model = plan_stylegan2(states["g_ema"], states.get("d"), src, size)
    model.update({"lr_mlp": 0.01, "blur_kernel": [1, 3, 3, 1], "mbstd_group": 4})

    spec = get_spec("stylegan2")
    generator, discriminator = spec.builder(spec.make_config(model, source=f"{src} (rebuilt architecture)"))
    same = lambda key: key  # noqa: E731
    optim = {}
    if obj.get("g_optim") is not None and "g" in states:
        optim["G"] = convert_optimizer(obj["g_optim"], parameter_sources(states["g"], generator, same),
                                       generator, src, "g_optim")
    if obj.get("d_optim") is not None and "d" in states:
        optim["D"] = convert_optimizer(obj["d_optim"], parameter_sources(states["d"], discriminator, same),
                                       discriminator, src, "d_optim")
    if step is None:
        step = step_from_filename(src) if not isinstance(source, dict) else None
        if step is None:
            assumptions.append("training step unknown (not in the file name): recorded as 0")
            step = 0
    latent_avg = obj.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(f"{src}: key 'latent_avg': expected a tensor, got {type(latent_avg).__name__}")
    imported = Imported(
        model_name="stylegan2", model=model, g_ema=states["g_ema"], g=states.get("g"), d=states.get("d"),
        optim=optim, train=_train_settings(args, assumptions) if args else stylegan2_train_settings(),
        data={"flip": True}, eval={"mode": "legacy_pytorch"},
        w_avg=latent_avg.reshape(-1) if latent_avg is not None else None, step=step, assumptions=assumptions,
        info={"official_keys": sorted(map(str, obj)), "official_args": plain(args),
              "ada_aug_p": plain(obj.get("ada_aug_p")),
              "layout": "rosinality names = nat-gan names (key for key)"})
    return assemble(imported, src, KIND)
