"""The page's latent controls as one validated value, and the latent ``w`` it names for a generator.

A fractional seed blends the latents of its two neighbouring integer seeds, as StyleGAN3's visualiser
does: in ``w`` (linear, after the mapping network; StyleGAN3's choice) or in ``z`` (spherical, before
it). Truncation then moves the blended ``w`` towards the checkpoint's centre; style mixing replaces the
chosen layers' rows with those of a second seed (truncated alike); SeFa direction strengths are added
last. A projected latent replaces the seed as the starting point and keeps its optimised noise maps.

The result is always a :class:`~natgan.latent.store.StoredLatents` of one latent, so what the page shows
is what ``nat-gan sample --w`` regenerates from the captured ``.npz``. For a class-conditional checkpoint the
spec names a class (``label``) and :func:`build_latent` is given the generator bound to it, so every latent
(seeds, mixing, the truncation centre) is that class's. A spec that only names an integer
seed (no blend, mixing, edit or projection) is also expressible as ``sample --seeds``, and is rendered
through ``sample``'s own code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import nn

from natgan.errors import ConfigError
from natgan.latent.mixing import mix
from natgan.latent.sefa import Direction, Directions, edit_latents
from natgan.latent.space import n_rows, parse_layers
from natgan.models.contract import has_mapping_network
from natgan.latent.store import StoredLatents
from natgan.latent.walk import slerp
from natgan.noise_modes import DEFAULT_NOISE_MODE, NOISE_MODES
from natgan.sampling.classes import parse_class
from natgan.sampling.generate import truncate
from natgan.sampling.seeds import latents_for_seeds

MAX_STUDIO_SEED = 2**31 - 1  # seeds travel through the page as floats: keep every integer exact (< 2**53)
BLEND_SPACES = ("w", "z")
PSI_RANGE = (-2.0, 2.0)
MAX_STRENGTH = 100.0


@dataclass
class LatentSpec:
    seed: float = 0.0
    blend: str = "w"                    # where a fractional seed blends: w (lerp) | z (slerp)
    psi: float = 1.0
    noise_mode: str = DEFAULT_NOISE_MODE
    mix_seed: int | None = None         # style mixing: rows `mix_layers` come from this seed
    mix_layers: str = ""
    strengths: tuple[float, ...] = ()   # SeFa component k moved by strengths[k]
    projected: StoredLatents | None = field(default=None, repr=False)
    label: int | None = None            # the class of a class-conditional checkpoint (None: unconditional)

    def validated(self) -> "LatentSpec":
        """A copy with numbers normalised; one-line ConfigErrors naming the control and value at fault."""
        seed = _number(self.seed, "seed")
        if not 0 <= seed <= MAX_STUDIO_SEED - 1:
            raise ConfigError(f"seed {self.seed}: expected a number from 0 to {MAX_STUDIO_SEED - 1} (a fraction "
                              f"blends the two neighbouring seeds)")
        if self.blend not in BLEND_SPACES:
            raise ConfigError(f"blend '{self.blend}': expected one of {', '.join(BLEND_SPACES)}")
        psi = _number(self.psi, "psi")
        if not PSI_RANGE[0] <= psi <= PSI_RANGE[1]:
            raise ConfigError(f"psi {self.psi}: expected a number from {PSI_RANGE[0]} to {PSI_RANGE[1]}")
        if self.noise_mode not in NOISE_MODES:
            raise ConfigError(f"noise mode '{self.noise_mode}': expected one of {', '.join(NOISE_MODES)}")
        mix_seed = None
        if self.mix_seed is not None:
            value = _number(self.mix_seed, "mix seed")
            if value != int(value) or not 0 <= value <= MAX_STUDIO_SEED:
                raise ConfigError(f"mix seed {self.mix_seed}: expected an integer from 0 to {MAX_STUDIO_SEED}")
            mix_seed = int(value)
        strengths = tuple(_number(s, f"direction {k} strength") for k, s in enumerate(self.strengths))
        for k, s in enumerate(strengths):
            if abs(s) > MAX_STRENGTH:
                raise ConfigError(f"direction {k} strength {s}: expected a number from -{MAX_STRENGTH:g} "
                                  f"to {MAX_STRENGTH:g}")
        label = None
        if self.label is not None:
            value = _number(self.label, "class")
            if value != int(value) or value < 0:
                raise ConfigError(f"class {self.label}: expected a class index (0 or more)")
            label = int(value)
        return replace(self, seed=seed, psi=psi, mix_seed=mix_seed, mix_layers=(self.mix_layers or "").strip(),
                       strengths=strengths, label=label)

    @property
    def mixing(self) -> bool:
        return self.mix_seed is not None and bool(self.mix_layers)

    @property
    def seed_only(self) -> bool:
        """True when ``nat-gan sample --seeds N --trunc PSI`` names this latent on its own."""
        return (self.projected is None and float(self.seed).is_integer() and not self.mixing
                and not any(self.strengths))


def class_of_control(value, names: Sequence[str]) -> int | None:
    """The class control's value as a class index: None for an unconditional checkpoint (``names`` empty; its
    control is hidden and its value stale), a chosen entry's index as it is (validated when rendering), or typed
    text read as ``sample --class`` reads it (a name or an index; one class)."""
    if not names:
        return None
    if isinstance(value, str):
        found = parse_class(value, names, option="class")
        if len(found) != 1:
            raise ConfigError(f"class '{value}': choose one class, not {len(found)}")
        return found[0]
    return value


def _number(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} '{value}': expected a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} {value}: expected a finite number")
    return number


def latent_space(G: nn.Module) -> str:
    """How a studio latent is stored: one row per layer (``wplus``) where the model has rows, else one ``w``
    (``z`` for models without a mapping network, whose latent is z itself)."""
    if n_rows(G):
        return "wplus"
    return "w" if has_mapping_network(G) else "z"


def _seed_w(G: nn.Module, seed: float, blend: str, device: torch.device) -> torch.Tensor:
    base = math.floor(seed)
    frac = seed - base
    if frac == 0:
        return G.mapping(latents_for_seeds([base], G.z_dim).to(device))
    z = latents_for_seeds([base, base + 1], G.z_dim).to(device)
    if blend == "z":
        return G.mapping(slerp(z[:1], z[1:], torch.tensor([frac], device=device)))
    w = G.mapping(z)
    return torch.lerp(w[:1], w[1:], frac)


def _full(w: torch.Tensor, G: nn.Module) -> torch.Tensor:
    """``[1, n_latent, w_dim]`` for multi-latent models (mapping broadcasts rows), else ``[1, w_dim]``."""
    if n_rows(G) and w.ndim == 2:
        return w.unsqueeze(1).expand(-1, n_rows(G), -1)
    return w


@torch.no_grad()
def build_latent(G: nn.Module, spec: LatentSpec, *, w_avg: torch.Tensor | None = None,
                 directions: Directions | None = None, name: str = "studio", model: str = "") -> StoredLatents:
    """The one latent ``spec`` names for ``G`` (on ``G``'s device), as :class:`StoredLatents`.

    ``w_avg`` is the truncation centre (needed when ``psi != 1``); ``directions`` the checkpoint's SeFa
    components (needed when a strength is non-zero).
    """
    device = next(iter(G.parameters())).device
    noise: dict[str, torch.Tensor] = {}
    if spec.projected is not None:
        stored = spec.projected.to(device)
        w = _full(stored.synthesis_input(G, "projected latent"), G).clone()
        noise = {k: v[:1] for k, v in stored.noise.items()}
    else:
        w = _full(_seed_w(G, spec.seed, spec.blend, device), G)
        if spec.psi != 1.0:
            w = truncate(w, spec.psi, w_avg)
        w = w.clone()
    if spec.mixing:
        layers = parse_layers(spec.mix_layers, G, option="style-mixing layers")
        other = _full(G.mapping(latents_for_seeds([spec.mix_seed], G.z_dim).to(device)), G)
        if spec.psi != 1.0:  # psi truncates every seed's latent (a projected latent is used as found)
            other = truncate(other, spec.psi, w_avg)
        w = mix(w, other, layers)
    active = [(k, s) for k, s in enumerate(spec.strengths) if s]
    if active:
        if directions is None:
            raise ValueError("direction strengths need the checkpoint's directions")
        for k, s in active:
            if k >= len(directions.vectors):
                raise ConfigError(f"direction {k}: this checkpoint has {len(directions.vectors)} directions")
            w = edit_latents(w, Direction(directions.vectors[k], directions.layers, directions.space, k), [s])
    space = latent_space(G)
    if space != "wplus" and w.ndim == 3:
        w = w[:, 0]
    return StoredLatents(w=w.float().cpu(), space=space, names=[name], model=model,
                         noise={k: v.cpu() for k, v in noise.items()})
