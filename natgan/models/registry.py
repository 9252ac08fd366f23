"""The model registry: one name per architecture (timm-style), one builder, one typed config.

Contract every registered generator ``G`` honours, so the trainer, ``sample``, ``fid``, ``bench`` and
``visualize`` never special-case an architecture:

* ``G.z_dim`` (latent size), ``G.resolution`` (output side), ``G.normalization`` ("imagenet" or
  "symmetric": the space images live in, see :mod:`natgan.models.normalization`);
* ``G.mapping(z) -> w`` and ``G.synthesis(w) -> images`` with ``G(z, c=None, psi=1.0, w_avg=None)`` their
  composition (truncation ``w_avg + psi * (w - w_avg)`` in w space);
* ``G.n_latent``: when not None, ``w`` is ``[B, n_latent, w_dim]`` and style mixing swaps rows of dim 1;
* ``G.num_classes`` (0 = unconditional): ``G.mapping(z, c)`` and ``G(z, c, psi, w_avg)`` take labels ``c``
  (class indices ``[B]`` or vectors ``[B, num_classes]``, see :mod:`natgan.models.conditioning`).

The discriminator maps ``[B, 3, R, R]`` images in the same space (+ labels ``c`` when conditional) to
``[B, 1]`` logits.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from natgan import config as cfg
from natgan.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, typed config, builder and what the user sees in ``bench --list``."""

    name: str
    config_cls: type
    builder: Callable[[Any], tuple[nn.Module, nn.Module]]
    description: str
    defaults: dict[str, Any]
    paper_params_g: float | None = None  # millions, as reported by the paper (for the acceptance table)
    # Generator img/s the paper reports at 256x256 (StyleNAT Table 1 for StyleNAT/StyleSwin/StyleGAN2, HiT's
    # own table on one V100): context for `bench`, comparable only with a measurement on like hardware
    paper_img_per_s: float | None = None

    def make_config(self, overrides: dict[str, Any] | None = None, *, source: str = "model config") -> Any:
        data = {**self.defaults, **(overrides or {})}
        data.pop("name", None)
        return cfg.build(self.config_cls, data, section="model", source=source)


@dataclass
class ModelPair:
    """What :func:`create` returns: generator, discriminator, and the validated config that built them."""

    name: str
    config: Any
    generator: nn.Module
    discriminator: nn.Module


_REGISTRY: dict[str, ModelSpec] = {}
_LOADED = False


def register_model(name: str, *, config: type, description: str, defaults: dict[str, Any] | None = None,
                   paper_params_g: float | None = None, paper_img_per_s: float | None = None) -> Callable:
    """Decorator for ``builder(config) -> (G, D)``; ``defaults`` lets one builder serve presets (hit-s/b/l).

    ``paper_params_g`` (millions) and ``paper_img_per_s`` (generator throughput at 256x256) are what the
    paper reports, shown beside measurements by ``bench``.
    """

    def decorator(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, config, builder, description, dict(defaults or {}), paper_params_g,
                                    paper_img_per_s)
        return builder

    return decorator


def _load_all() -> None:
    """Import every module of :mod:`natgan.models` once, so each file registers its architectures."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    # The package's folder from this file's location: importing ``natgan.models`` here would be an import
    # circle (the package's ``__init__`` re-exports this module).
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.name.startswith("_"):
            importlib.import_module(f"natgan.models.{info.name}")


def get_spec(name: str) -> ModelSpec:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> list[ModelSpec]:
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def create(name: str, config: Any = None, **overrides: Any) -> ModelPair:
    """Build a model by registry name: ``create("stylenat", resolution=32, channel_multiplier=1)``.

    ``config`` may be an already validated config object (e.g. from a recipe); otherwise keyword
    overrides are validated against the model's config class.
    """
    spec = get_spec(name)
    if config is None:
        config = spec.make_config(overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    with torch.device("meta"):  # sizes first, on the meta device (no memory, no compute)
        meta_g, meta_d = spec.builder(config)
    check_model_fits(meta_g, meta_d)
    generator, discriminator = spec.builder(config)
    return ModelPair(name, config, generator, discriminator)


MAX_MODEL_ELEMENTS = 2 ** 31  # 8 GiB of fp32 per network; the largest real model here has 0.1 G


def check_model_fits(generator: nn.Module, discriminator: nn.Module) -> None:
    """Refuse a configuration whose networks (built on the meta device) exceed a hard element bound or the
    memory budget, before any real tensor exists: ``model.style_dim = 100000`` would otherwise allocate
    tens of gigabytes, and a 42 kB checkpoint of stride-0 tensors a 7.7 GB generator."""
    from natgan.limits import check_fits, human_bytes

    total, sizes = 0, []
    for net, what in ((generator, "generator"), (discriminator, "discriminator")):
        tensors = list(net.state_dict().values())
        size = sum(t.numel() for t in tensors)
        if size > MAX_MODEL_ELEMENTS:
            raise ConfigError(f"the model config describes a {what} of {size:.3g} elements (limit "
                              f"{MAX_MODEL_ELEMENTS:.3g}): "
                              f"refusing to allocate it")
        total += sum(t.numel() * t.element_size() for t in tensors)
        sizes.append(f"{size:.3g}")
    check_fits(total, f"this model (generator {sizes[0]} + discriminator {sizes[1]} parameters, "
                      f"{human_bytes(total)})", error=ConfigError)


def set_requires_grad(module: nn.Module, flag: bool, *, frozen: frozenset[int] = frozenset()) -> None:
    """Freeze or unfreeze every parameter (GAN steps train one network against the other, frozen);
    parameters whose ``id`` is in ``frozen`` (Freeze-D) always stay off."""
    for p in module.parameters():
        p.requires_grad_(flag and id(p) not in frozen)


def count_params(module: nn.Module) -> int:
    """Trainable parameters (buffers such as BatchNorm statistics or SN vectors excluded)."""
    return sum(p.numel() for p in module.parameters())
