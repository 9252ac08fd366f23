"""The Python API behind ``nat-gan sample``: load a checkpoint's generator, write seeds, grids, walks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from natgan import checkpoint as ckpt_io
from natgan.errors import CheckpointError
from natgan.fsutil import refuse_existing
from natgan.noise_modes import DEFAULT_NOISE_MODE
from natgan.sampling.classes import (LabelSource, bind_class, chosen_classes, class_names_of, fixed_class,
                                     num_classes_of)
from natgan.sampling.export import SampleWriter, grid_image, save_png, seed_name
from natgan.sampling.generate import ImageGenerator, eval_mode, truncation_centre

Progress = Callable[[int], None]  # called with the number of images just finished


@dataclass
class LoadedGenerator:
    G: nn.Module
    ckpt: dict
    path: Path
    ema: bool  # whether the EMA weights were used

    def centre(self, psi: float, G: nn.Module | None = None) -> torch.Tensor | None:
        """The truncation centre for ``psi`` on ``G`` (``self.G``, or ``self.G`` bound to one class): the policy of
        :func:`natgan.sampling.generate.truncation_centre` with this checkpoint's stored centre. Every
        sampling path asks here, so ``sample --trunc`` in every mode and the studio agree on each seed's image."""
        return truncation_centre(self.G if G is None else G, psi,
                                 self.truncation_centre() if psi != 1.0 else None)

    def centre_kind(self, psi: float) -> str | None:
        """What :meth:`centre` truncates toward, for ``--json`` records: ``stored`` (the checkpoint's), ``mean w``
        (10k fixed-seed latents), ``class mean w`` (of the bound class, or each image's class), None at psi 1."""
        if psi == 1.0:
            return None
        if self.truncation_centre() is not None:
            return "stored"
        return "class mean w" if num_classes_of(self.G) else "mean w"

    def truncation_centre(self) -> torch.Tensor | None:
        """The centre stored in the checkpoint (imported official files carry ``latent_avg``/``w_avg``), else None
        (validated against this generator's w; :meth:`centre` is the policy that falls back to a computed one).

        Truncated samples of an imported model then match the official code's, which truncates towards its
        training-time running average rather than a fresh estimate.
        """
        w_avg = (self.ckpt.get("extra") or {}).get("w_avg")
        if w_avg is None:
            return None
        where = f"{self.path}: key 'extra.w_avg'"
        if not isinstance(w_avg, torch.Tensor) or not w_avg.is_floating_point():
            raise CheckpointError(f"{where}: expected a float tensor, got {type(w_avg).__name__}")
        device = next(self.G.parameters()).device
        z = torch.zeros(1, self.G.z_dim, device=device)
        with torch.inference_mode():             # a conditional generator maps z with some label (its shape is all)
            w = self.G.mapping(z, torch.zeros(1, dtype=torch.long, device=device)) if num_classes_of(self.G) \
                else self.G.mapping(z)
        w_shape = tuple(w.shape[1:])
        if tuple(w_avg.shape) not in (w_shape, w_shape[-1:], (1, *w_shape[-1:])):
            raise CheckpointError(f"{where}: shape {list(w_avg.shape)} does not fit this generator's w "
                                  f"{list(w_shape)}")
        if not torch.isfinite(w_avg).all():
            raise CheckpointError(f"{where}: non-finite values (NaN/inf); truncation would only produce garbage")
        return w_avg.to(device)

    def class_names(self) -> list[str]:
        """Names of the generator's classes (what the training data called them), [] when unconditional."""
        return class_names_of(self.ckpt, num_classes_of(self.G))

    def chosen_classes(self, text: str | None, *, option: str = "--class") -> list[int]:
        """``--class`` text -> class indices (see :func:`natgan.sampling.classes.chosen_classes`)."""
        return chosen_classes(self.G, self.ckpt, text, option=option, where=self.path)

    def for_class(self, text: str | None, *, option: str = "--class") -> nn.Module:
        """The generator bound to the one class ``text`` names (itself when unconditional)."""
        return bind_class(self.G, self.ckpt, text, option=option, where=self.path)

    def class_folder(self, index: int) -> str:
        """A file-system-safe folder name for class ``index`` (``03-cat``)."""
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.class_names()[index])[:64]
        return f"{index:0{len(str(len(self.class_names()) - 1))}d}-{name}" if name != str(index) else name

    def describe(self) -> dict:
        return {"checkpoint": str(self.path), "model": self.ckpt["model"]["name"],
                "step": self.ckpt["progress"].get("step"), "ema": self.ema, "resolution": self.G.resolution}


def load_generator(path: str | Path, *, ema: bool = True, device: torch.device | str = "cpu") -> LoadedGenerator:
    """Rebuild a checkpoint's generator (EMA weights unless ``ema=False`` or the file has none)."""
    path = Path(path)
    ckpt = ckpt_io.load(path)
    G = ckpt_io.build_generator(ckpt, ema=ema, device=device, source=path)
    return LoadedGenerator(G=G, ckpt=ckpt, path=path, ema=bool(ema and "G_ema" in ckpt["weights"]))


def sample_outputs(outdir: str | Path, seeds: Sequence[int], fmt: str = "png") -> list[Path]:
    """The files :func:`write_samples` writes (none are listed for a folder that does not exist yet)."""
    outdir = Path(outdir)
    if fmt != "png":
        return [outdir / f"samples.{fmt}"]
    return [outdir / f"{seed_name(s)}.png" for s in seeds] if outdir.is_dir() else []


def write_samples(G: nn.Module, seeds: Sequence[int], outdir: str | Path, *, fmt: str = "png",
                  batch_size: int = 8, psi: float = 1.0, w_avg: torch.Tensor | None = None,
                  noise_mode: str | None = DEFAULT_NOISE_MODE, progress: Progress | None = None,
                  labels: LabelSource | None = None) -> list[Path]:
    """One image per seed: ``seedNNNN.png`` files, or ``samples.zip`` / ``samples.npz`` in ``outdir``."""
    refuse_existing(sample_outputs(outdir, seeds, fmt))  # under a no-overwrite policy: before generating anything
    writer = SampleWriter(fmt, Path(outdir), count=len(seeds))
    try:
        with eval_mode(G, noise_mode):
            gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg, labels=labels)
            for chunk, images in gen.batches(seeds):
                writer.add([seed_name(s) for s in chunk], images)
                if progress:
                    progress(len(chunk))
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def write_grid(G: nn.Module, seeds: Sequence[int], path: str | Path, cols: int, rows: int, *,
               batch_size: int = 8, psi: float = 1.0, w_avg: torch.Tensor | None = None,
               noise_mode: str | None = DEFAULT_NOISE_MODE, progress: Progress | None = None,
               labels: LabelSource | None = None) -> Path:
    """``cols x rows`` images of ``seeds`` (row-major) tiled into one PNG."""
    refuse_existing([path])
    return save_png(Path(path), seed_grid(G, seeds, cols, rows, batch_size=batch_size, psi=psi, w_avg=w_avg,
                                          noise_mode=noise_mode, progress=progress, labels=labels))


def write_class_grid(G: nn.Module, seeds: Sequence[int], classes: Sequence[int], path: str | Path, *,
                     batch_size: int = 8, psi: float = 1.0, w_avg: torch.Tensor | None = None,
                     noise_mode: str | None = DEFAULT_NOISE_MODE, progress: Progress | None = None) -> Path:
    """One row per class, one column per seed (the same latent down each column) in one PNG."""
    refuse_existing([path])
    return save_png(Path(path), class_grid(G, seeds, classes, batch_size=batch_size, psi=psi, w_avg=w_avg,
                                           noise_mode=noise_mode, progress=progress))


def class_grid(G: nn.Module, seeds: Sequence[int], classes: Sequence[int], *, batch_size: int = 8, psi: float = 1.0,
               w_avg: torch.Tensor | None = None, noise_mode: str | None = "const",
               progress: Progress | None = None) -> np.ndarray:
    """The ``[len(classes)*H, len(seeds)*W, 3]`` grid: row ``i`` is class ``classes[i]`` at every seed."""
    rows = [seed_grid(G, seeds, len(seeds), 1, batch_size=batch_size, psi=psi, w_avg=w_avg, noise_mode=noise_mode,
                      progress=progress, labels=fixed_class(k)) for k in classes]
    return np.concatenate(rows, axis=0)


def seed_grid(G: nn.Module, seeds: Sequence[int], cols: int, rows: int, *, batch_size: int = 8, psi: float = 1.0,
              w_avg: torch.Tensor | None = None, noise_mode: str | None = "const",
              progress: Progress | None = None,
              labels: LabelSource | None = None) -> np.ndarray:
    """The ``[rows*H, cols*W, 3]`` uint8 grid of ``seeds``; ``noise_mode=None`` keeps ``G``'s own."""
    parts = []
    with eval_mode(G, noise_mode):
        gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg, labels=labels)
        for chunk, images in gen.batches(seeds):
            parts.append(images.cpu())
            if progress:
                progress(len(chunk))
    return grid_image(torch.cat(parts), cols, rows)
