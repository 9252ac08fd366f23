"""What the studio's capture button gives: the PNG shown, its latent ``.npz`` and the exact ``nat-gan sample``
command that writes the same PNG.

A latent that only names an integer seed is captured as ``sample --seeds N [--trunc PSI] [--noise-mode M]``;
anything else (a fractional seed, style mixing, direction edits, a projected latent) as ``sample --w FILE.npz``,
because the ``.npz`` holds the finished latent (and a projection's noise maps) that no seed list can express.
A class-conditional checkpoint's command adds ``--class`` with the class's name (its index where the name
would read back as another class: :func:`~natgan.sampling.classes.class_argument`).
Both commands run the very code the studio rendered with, so the PNGs are equal byte for byte.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from natgan.latent.store import StoredLatents, save_latents
from natgan.noise_modes import DEFAULT_NOISE_MODE
from natgan.sampling.classes import class_argument
from natgan.sampling.export import save_png, seed_name
from natgan.studio.spec import LatentSpec

CAPTURE_OUTDIR = "studio-capture"


@dataclass
class Capture:
    png: Path          # the image shown, as `sample` names it
    latents: Path      # the latent .npz (loadable by `sample --w`)
    command: str       # one shell line; run it where the .npz was saved
    name: str


def capture_name(spec: LatentSpec) -> str:
    """A file stem that says what the latent is: ``seed0012``, ``seed12.25-w-mix3``, ``projected-edit``."""
    if spec.seed_only:
        return seed_name(int(spec.seed))
    parts = ["projected" if spec.projected is not None else f"seed{spec.seed:g}"]
    if spec.projected is None and not float(spec.seed).is_integer():
        parts.append(spec.blend)
    if spec.mixing:
        parts.append(f"mix{spec.mix_seed}")
    if any(spec.strengths):
        parts.append("edit")
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


def sample_command(ckpt: Path, spec: LatentSpec, *, latents_file: str | None = None, no_ema: bool = False,
                   outdir: str = CAPTURE_OUTDIR, classes: Sequence[str] = ()) -> list[str]:
    """argv of the ``nat-gan sample`` call that regenerates ``spec``'s image (``latents_file`` for ``--w``;
    ``classes``: the checkpoint's class names, which ``spec.label`` indexes when it is conditional)."""
    argv = ["nat-gan", "sample", "--ckpt", str(ckpt)]
    if spec.label is not None:
        argv += ["--class", class_argument(spec.label, classes)]
    if spec.seed_only:
        argv += ["--seeds", str(int(spec.seed))]
        if spec.psi != 1.0:
            argv += ["--trunc", repr(float(spec.psi))]  # repr round-trips the float exactly
    else:
        if latents_file is None:
            raise ValueError("this latent needs its .npz: pass latents_file")
        argv += ["--w", latents_file]
    if spec.noise_mode != DEFAULT_NOISE_MODE:
        argv += ["--noise-mode", spec.noise_mode]
    if no_ema:
        argv.append("--no-ema")
    return argv + ["--outdir", outdir]


def write_capture(folder: Path, image: np.ndarray, latents: StoredLatents, ckpt: Path, spec: LatentSpec, *,
                  no_ema: bool = False, classes: Sequence[str] = ()) -> Capture:
    """Write ``<name>.png`` and ``<name>.npz`` into ``folder``; the command names the ``.npz`` by its file name."""
    name = latents.names[0]
    png = save_png(folder / f"{name}.png", image)
    npz = save_latents(folder / f"{name}.npz", latents)
    argv = sample_command(ckpt, spec, latents_file=npz.name, no_ema=no_ema, classes=classes)
    return Capture(png=png, latents=npz, command=shlex.join(argv), name=name)
