"""Closed-form factorization of latent semantics (SeFa, Shen & Zhou 2021).

A style-based generator first turns each layer's w row into styles with an affine map ``y = A w + b``.
Moving w along ``n`` changes the styles by ``A n``; SeFa takes the unit directions that change them
most: the top eigenvectors of ``A^T A``, where ``A`` stacks the chosen layers' style-modulation
weights. As in the official implementation, every output unit's weight vector (each row of ``A``) is
normalised to unit length first, so layers of different scale count alike.

The modulation layers are found through the contract, not per family: a probe ``w`` with distinct
random rows is fed to ``G.synthesis`` and every linear layer whose input is exactly (a slice of) one
w row is a style modulation of that row. Which of them are factorised is the ``selection``:

* ``official`` (default; genforce/sefa's ``factorize_weight``): per chosen w row, the modulations of the
  layers that *compute features* from it; a ToRGB modulation only where no other layer reads the row,
  which in StyleGAN2 is the last ToRGB for the last row (genforce's ``output{N}`` for ``layer{L-1}``).
  Per family: StyleGAN2, the modulated convs (``conv1``, ``convs.*``) plus the last ``to_rgbs`` for the
  last row; GANformer, its modulated convs plus the final ``torgb`` for the last row (global-latent
  slice only, so its directions move the global component); StyleNAT/StyleSwin, the AdaIN style layers
  (their ToRGBs read no style); HiT has no mapping network and no per-layer styles: its z enters through
  the stem and latent-embedding projections, which play the role of ``A`` (directions in z).
* ``all``: every modulation that reads a chosen row, ToRGBs included (in StyleGAN2 the intermediate
  ToRGBs share rows 1, 3, 5, ... with the up-sampling convs: 40-50 % more rows, other directions).

A ToRGB is recognised by its module name (``to_rgb``, ``to_rgbs``, ``torgb``; any case), the names every
family here uses.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from natgan.errors import ConfigError, NatGanError
from natgan.latent.space import n_rows, w_row_dim
from natgan.models.contract import has_mapping_network
from natgan.npzfile import read_npz
from natgan.validators import finite_array
from natgan.sampling.export import save_bytes
from natgan.sampling.generate import eval_mode


@dataclass
class StyleLayer:
    name: str        # module name in G
    row: int         # w row it reads (0 for single-latent models)
    offset: int      # first element of the row it reads
    weight: torch.Tensor  # effective [out, in] weight (equalised-lr scale applied)


def _effective_weight(module: nn.Module) -> torch.Tensor:
    scale = getattr(module, "scale", 1.0)  # EqualLinear keeps weights unscaled, multiplies at run time
    return module.weight.detach().float() * scale


@torch.no_grad()
def style_layers(G: nn.Module) -> list[StyleLayer]:
    """Every linear layer that reads a w row (or a contiguous slice of one) directly, in call order."""
    device = next(iter(G.parameters())).device
    n = n_rows(G)
    shape = (1, n, w_row_dim(G)) if n else (1, w_row_dim(G))
    probe = torch.randn(shape, generator=torch.Generator().manual_seed(7)).to(device)
    rows = probe[0] if n else probe
    seen: list[tuple[str, torch.Tensor]] = []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and x.ndim == 2 and x.shape[0] == 1:
                seen.append((name, x[0].detach()))
        return record

    linear = [(name, m) for name, m in G.named_modules()
              if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2]
    handles = [m.register_forward_hook(hook(name)) for name, m in linear]
    try:
        with eval_mode(G, "const"):
            G.synthesis(probe)
    finally:
        for h in handles:
            h.remove()
    modules = dict(linear)
    found, names = [], set()
    for name, x in seen:
        if name in names:
            continue
        for r, row in enumerate(rows):
            if len(x) > len(row):
                continue
            windows = row.unfold(0, len(x), 1)
            hit = (windows == x).all(dim=1).nonzero()
            if len(hit):
                found.append(StyleLayer(name, r, int(hit[0]), _effective_weight(modules[name])))
                names.add(name)
                break
    return found


@dataclass
class Directions:
    vectors: torch.Tensor     # [K, w_dim] unit directions in one w row (z for models without mapping)
    values: torch.Tensor      # [K] eigenvalues, descending
    layers: list[int]         # w rows whose styles were factorised
    space: str                # "w" or "z"
    matrix: torch.Tensor      # the factorised matrix A^T A ([w_dim, w_dim])
    modules: list[str]
    selection: str = "official"

    def save(self, path: str | Path, model: str = "") -> Path:
        buf = io.BytesIO()
        np.savez(buf, directions=self.vectors.numpy(), eigenvalues=self.values.numpy(),
                 layers=np.array(self.layers, dtype=np.int64), space=np.array(self.space), model=np.array(model),
                 modules=np.array(self.modules), selection=np.array(self.selection))
        return save_bytes(Path(path), buf.getvalue())


SELECTIONS = ("official", "all")
_TO_RGB = re.compile(r"(^|\.)to_?rgbs?(\d*)(\.|$)", re.IGNORECASE)


def is_to_rgb(name: str) -> bool:
    """A ToRGB (output) layer's module, by the names the families use: ``to_rgb1``, ``to_rgbs.3``, ``torgb``."""
    return bool(_TO_RGB.search(name))


def select_layers(found: list[StyleLayer], rows: set[int], selection: str = "official") -> list[StyleLayer]:
    """The style layers of ``rows`` that ``selection`` factorises (see the module docstring)."""
    if selection not in SELECTIONS:
        raise ConfigError(f"--select '{selection}': expected one of {', '.join(SELECTIONS)}")
    chosen = [s for s in found if s.row in rows]
    if selection == "all":
        return chosen
    feature_rows = {s.row for s in chosen if not is_to_rgb(s.name)}
    return [s for s in chosen if not is_to_rgb(s.name) or s.row not in feature_rows]


def factorize(G: nn.Module, layers: Sequence[int] | None = None, *, selection: str = "official") -> Directions:
    """SeFa directions from the style layers reading w rows ``layers`` (all rows when None), chosen by
    ``selection`` (``official``: genforce's layers; ``all``: every modulation of those rows)."""
    found = style_layers(G)
    if not found:
        raise NatGanError("SeFa does not apply to this model: no linear layer reads the latent directly")
    wanted = set(range(n_rows(G) or 1)) if layers is None else set(layers)
    chosen = select_layers(found, wanted, selection)
    if not chosen:
        raise ConfigError(f"--layers: no style modulation reads w rows {sorted(wanted)}")
    width = w_row_dim(G)
    blocks = []
    for s in chosen:
        embedded = torch.zeros(s.weight.shape[0], width)
        embedded[:, s.offset:s.offset + s.weight.shape[1]] = s.weight.cpu()
        blocks.append(embedded)
    a = torch.cat(blocks).double()
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    matrix = a.T @ a
    values, vectors = torch.linalg.eigh(matrix)
    order = torch.argsort(values, descending=True)
    # Directions outside the span of the chosen weights (GANformer's local components) have eigenvalue 0.
    order = order[values[order] > values.max() * 1e-6]
    return Directions(vectors=vectors[:, order].T.float().contiguous(), values=values[order].float(),
                      layers=sorted({s.row for s in chosen}), space="w" if has_mapping_network(G) else "z",
                      matrix=matrix.float(), modules=[s.name for s in chosen], selection=selection)


@dataclass
class Direction:
    vector: torch.Tensor  # [w_dim]
    layers: list[int]
    space: str
    index: int


def load_direction(spec: str) -> Direction:
    """``"dirs.npz:3"`` -> direction 3 of a file written by :meth:`Directions.save` (``:0`` when omitted)."""
    path_text, _, index_text = spec.rpartition(":") if ":" in spec else (spec, "", "0")
    if not index_text.isdigit():
        raise ConfigError(f"--direction '{spec}': expected FILE.npz:INDEX, e.g. dirs.npz:3")
    path, index = Path(path_text), int(index_text)
    if not path.is_file():
        raise NatGanError(f"--direction {path}: file not found (write one with `nat-gan directions`)")
    data = read_npz(path, "directions file")
    missing = [k for k in ("directions", "layers", "space") if k not in data]
    if missing:
        raise NatGanError(f"--direction {path}: not a directions file (no '{missing[0]}' array)")
    vectors = finite_array(data["directions"], f"--direction {path}: array 'directions'")
    if vectors.ndim != 2 or not vectors.shape[1]:
        raise NatGanError(f"--direction {path}: 'directions' has shape {list(vectors.shape)} "
                          f"(expected [K, width])")
    layers_arr = np.atleast_1d(data["layers"])
    if layers_arr.ndim != 1 or layers_arr.dtype.kind not in "iu" or (layers_arr < 0).any():
        raise NatGanError(f"--direction {path}: 'layers' should be a list of w row indices >= 0, got "
                          f"{layers_arr.tolist()[:8]}")
    layers = [int(i) for i in layers_arr]
    if len(set(layers)) != len(layers):
        raise NatGanError(f"--direction {path}: 'layers' repeats a row ({layers})")
    space = str(data["space"]) if data["space"].ndim == 0 else ""
    if space not in ("w", "z"):
        raise NatGanError(f"--direction {path}: 'space' should be 'w' or 'z', got {data['space'].tolist()!r}")
    if index >= len(vectors):
        raise ConfigError(f"--direction '{spec}': index {index} out of range ({len(vectors)} directions)")
    return Direction(torch.from_numpy(vectors[index].copy()), layers, space, index)


def edit_latents(w: torch.Tensor, direction: Direction, strengths: Sequence[float]) -> torch.Tensor:
    """``[B, ...]`` latents -> ``[B * S, ...]`` edits (row-major: each latent, then each strength); in w the
    direction is added to the factorised layers' rows only."""
    out = []
    vec = direction.vector.to(w)
    for latent in w:
        for strength in strengths:
            edited = latent.clone()
            if edited.ndim == 2:
                edited[direction.layers] += strength * vec
            else:
                edited += strength * vec
            out.append(edited)
    return torch.stack(out)
