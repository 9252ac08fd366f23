"""Latents on disk: one ``.npz`` per set of images, readable by numpy and by ``nat-gan sample --w``.

Arrays: ``w`` float32 (``[N, w_dim]`` for space ``w`` and ``z``, ``[N, n_latent, w_dim]`` for ``wplus``),
``names`` (one per latent), ``space``, ``model`` (registry name), and for models with noise inputs the
optimised maps as ``noise/<buffer name>`` (``[N, 1, H, W]``), so a projection regenerates exactly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from natgan.errors import NatGanError
from natgan.fsutil import plain_name
from natgan.latent.space import broadcast, n_rows, w_row_dim
from natgan.sampling.export import save_bytes

SPACES = ("w", "wplus", "z")
NOISE_PREFIX = "noise/"


@dataclass
class StoredLatents:
    w: torch.Tensor
    space: str
    names: list[str]
    model: str = ""
    noise: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [N, 1, H, W]

    def __len__(self) -> int:
        return len(self.w)

    def to(self, device: torch.device | str) -> "StoredLatents":
        return StoredLatents(w=self.w.to(device), space=self.space, names=list(self.names), model=self.model,
                             noise={k: v.to(device) for k, v in self.noise.items()})

    def synthesis_input(self, G: nn.Module, path: str | Path = "<latents>") -> torch.Tensor:
        """The ``w`` to feed ``G.synthesis`` (z latents go through ``G.mapping``), checked against ``G``."""
        n, dim = n_rows(G), w_row_dim(G)
        if self.space == "wplus":
            if not n or tuple(self.w.shape[1:]) != (n, dim):
                raise NatGanError(f"{path}: w+ latents of shape {tuple(self.w.shape[1:])} do not fit this model "
                                  f"(expects [{n}, {dim}])")
            return self.w
        width = G.z_dim if self.space == "z" else dim
        if self.w.ndim != 2 or self.w.shape[1] != width:
            raise NatGanError(f"{path}: {self.space} latents of width {self.w.shape[-1]} do not fit this model "
                              f"(expects {width})")
        if self.space == "z":
            return G.mapping(self.w)
        return broadcast(self.w, G)


def save_latents(path: str | Path, latents: StoredLatents) -> Path:
    """Write ``latents`` atomically (temp name, then rename)."""
    if latents.space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {latents.space!r}")
    arrays = {"w": latents.w.detach().cpu().float().numpy(), "space": np.array(latents.space),
              "names": np.array(list(latents.names)), "model": np.array(latents.model)}
    for name, tensor in latents.noise.items():
        arrays[NOISE_PREFIX + name] = tensor.detach().cpu().float().numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return save_bytes(Path(path), buf.getvalue())


def load_latents(path: str | Path) -> StoredLatents:
    """Read a file written by :func:`save_latents` (or any npz with a ``w`` array: space ``w`` assumed,
    ``wplus`` when it is 3-D)."""
    from natgan.npzfile import read_npz
    from natgan.validators import finite_array

    path = Path(path)
    data = read_npz(path, "latent file")
    if "w" not in data:
        raise NatGanError(f"{path}: no 'w' array (expected a file written by `nat-gan project`)")
    w = torch.from_numpy(finite_array(data["w"], f"{path}: array 'w'").copy())
    if w.ndim not in (2, 3) or len(w) == 0:
        raise NatGanError(f"{path}: 'w' has shape {tuple(w.shape)} (expected [N, w_dim] or [N, layers, w_dim])")
    space = _text(data, "space", path) if "space" in data else ("wplus" if w.ndim == 3 else "w")
    if space not in SPACES:
        raise NatGanError(f"{path}: unknown latent space '{space}' (expected one of {', '.join(SPACES)})")
    names = [str(n) for n in np.atleast_1d(data["names"])] if "names" in data else \
        [f"latent{i:04d}" for i in range(len(w))]
    if len(names) != len(w):
        raise NatGanError(f"{path}: 'w' has shape {tuple(w.shape)} and {len(names)} names")
    repeated = next((n for n in names if names.count(n) > 1), None)
    if repeated is not None:  # `sample --w` writes <name>.png: two latents would overwrite each other
        raise NatGanError(f"{path}: the name '{repeated}' is given to two latents (names must be unique)")
    for i, name in enumerate(names):  # names become output file names (sample --w): plain names only
        plain_name(name, f"{path}: names[{i}]")
    model = _text(data, "model", path) if "model" in data else ""
    noise = {}
    for key in data:
        if key.startswith(NOISE_PREFIX):
            arr = finite_array(data[key], f"{path}: array '{key}'")
            if arr.ndim != 4 or len(arr) != len(w):
                raise NatGanError(f"{path}: array '{key}' has shape {list(arr.shape)} (expected [{len(w)}, 1, H, W])")
            noise[key[len(NOISE_PREFIX):]] = torch.from_numpy(arr.copy())
    return StoredLatents(w=w, space=space, names=names, model=model, noise=noise)


def _text(data: dict[str, np.ndarray], key: str, path: Path) -> str:
    value = data[key]
    if value.ndim != 0 or value.dtype.kind not in "US":
        raise NatGanError(f"{path}: '{key}' should be one string, got a {value.dtype} array of shape "
                          f"{list(value.shape)}")
    return str(value)


def concat(parts: Sequence[StoredLatents]) -> StoredLatents:
    """One file's worth from several single-target results (same space and noise maps)."""
    first = parts[0]
    noise = {k: torch.cat([p.noise[k] for p in parts]) for k in first.noise}
    return StoredLatents(w=torch.cat([p.w for p in parts]), space=first.space,
                         names=[n for p in parts for n in p.names], model=first.model, noise=noise)
