"""What ``nat-gan project`` writes for each target, and finding the targets in a folder.

Per target ``<outdir>/<stem>/``: ``target.png`` (resized and cropped as the generator sees it),
``proj.png`` (the final latent's image), ``compare.png`` (target | result), ``projected_w.npz``,
``loss.csv`` and ``loss.png`` (LPIPS and MSE per step), and with ``video`` ``proj.mp4`` (target | image
of every step). ``<outdir>/projected_w.npz`` holds every target's latent, in order, for
``nat-gan sample --w``.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from natgan.data.sources import IMAGE_EXTENSIONS
from natgan.errors import ConfigError, DataError
from natgan.fsutil import overwrite_policy, refuse_existing
from natgan.latent.project import ProjectionSettings, load_target, project
from natgan.latent.store import StoredLatents, concat, load_latents, save_latents
from natgan.metrics.lpips import LPIPS
from natgan.sampling.export import save_bytes, save_png, to_hwc
from natgan.sampling.video import Mp4Writer


def find_targets(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus the images directly inside named folders (sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            images = sorted(f for f in p.iterdir()
                            if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file())
            if not images:
                raise DataError(f"{p}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder")
            found.extend(images)
        elif p.is_file():
            found.append(p)
        else:
            raise DataError(f"{p}: target not found")
    stems = [f.stem for f in found]
    duplicate = next((s for s in stems if stems.count(s) > 1), None)
    if duplicate:
        raise DataError(f"two targets are named '{duplicate}'; their outputs would overwrite each other")
    return found


def loss_curve_png(history: Sequence[dict], size: tuple[int, int] = (480, 240)) -> np.ndarray:
    """A small chart of LPIPS (blue) and MSE (orange) per step, each scaled to its own range."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    pad = 24
    draw.rectangle([pad, 8, w - 8, h - pad], outline=(160, 160, 160))
    for key, colour in (("lpips", (31, 119, 180)), ("mse", (255, 127, 14))):
        values = np.array([row[key] for row in history], dtype=np.float64)
        if len(values) < 2:
            continue
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo or 1.0
        xs = pad + (w - 8 - pad) * np.arange(len(values)) / (len(values) - 1)
        ys = (h - pad) - (h - pad - 8) * (values - lo) / span
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colour, width=2)
    draw.text((pad + 4, h - pad + 4), f"steps 1-{len(history)}   LPIPS (blue), MSE (orange), own scales",
              fill=(0, 0, 0))
    return np.asarray(img)


def _write_csv(path: Path, history: Sequence[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "lr", "lpips", "mse", "loss"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return save_bytes(path, buf.getvalue().encode())


TARGET_FILES = ("target.png", "proj.png", "compare.png", "projected_w.npz", "loss.csv", "loss.png")


def planned_outputs(targets: Sequence[Path], outdir: str | Path, *, video: bool = False) -> list[Path]:
    """Every file :func:`project_targets` will write, so a command can refuse a bad one before any work."""
    outdir = Path(outdir)
    names = TARGET_FILES + (("proj.mp4",) if video else ())
    return [outdir / path.stem / name for path in targets for name in names] + [outdir / "projected_w.npz"]


def _per_target_hint(init: Path, start: StoredLatents, targets: Sequence[Path]) -> str:
    """Which file to give instead: a projection writes one ``<target>/projected_w.npz`` per target beside the
    combined file, and a continuation of some targets takes theirs (or a file with one latent per target)."""
    own = [init.parent / t.stem / "projected_w.npz" for t in targets if t.stem in start.names]
    if len(targets) == 1 and own and own[0].is_file():
        return f"continue this target with --init {own[0]}"
    return "give a file with one latent, or one per target in order (each target's own <target>/projected_w.npz)"


def project_targets(G: nn.Module, targets: Sequence[Path], outdir: str | Path, lpips: LPIPS,
                    settings: ProjectionSettings, *, model: str = "", video: bool = False, fps: float = 30.0,
                    init: str | Path | None = None, on_step: Callable[[int], None] | None = None) -> dict:
    """Project every target; write the files above; return a JSON-able summary."""
    outdir = Path(outdir)
    refuse_existing(planned_outputs(targets, outdir, video=video))  # before minutes of optimisation, not after
    start = load_latents(init) if init else None
    if start is not None and len(start) not in (1, len(targets)):
        raise ConfigError(f"--init {init}: holds {len(start)} latents ({', '.join(start.names[:4])}"
                          f"{', ...' if len(start) > 4 else ''}) for {len(targets)} target"
                          f"{'s' if len(targets) != 1 else ''}; {_per_target_hint(Path(init), start, targets)}")
    results, summary = [], []
    for i, path in enumerate(targets):
        target = load_target(path, int(G.resolution))
        folder = outdir / path.stem
        target_hwc = to_hwc((target * 255 + 0.5).clamp(0, 255).to(torch.uint8))[0]
        writer = Mp4Writer(folder / "proj.mp4", fps=fps) if video else None
        first = None
        if start is not None:
            k = i if len(start) > 1 else 0
            first = StoredLatents(w=start.w[k:k + 1], space=start.space, names=[start.names[k]],
                                  noise={n: v[k:k + 1] for n, v in start.noise.items()})

        def step(n: int, image: torch.Tensor, writer=writer, target_hwc=target_hwc) -> None:
            if writer is not None:
                writer.add(np.concatenate([target_hwc, to_hwc(image)[0]], axis=1))
            if on_step is not None:
                on_step(1)

        try:
            result = project(G, target, lpips, settings, init=first, name=path.stem, on_step=step)
            written = [writer.close()] if writer is not None else []
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        result.latents.model = model
        proj_hwc = to_hwc(result.image)[0]
        written += [save_png(folder / "target.png", target_hwc), save_png(folder / "proj.png", proj_hwc),
                    save_png(folder / "compare.png", np.concatenate([target_hwc, proj_hwc], axis=1)),
                    save_latents(folder / "projected_w.npz", result.latents),
                    _write_csv(folder / "loss.csv", result.history),
                    save_png(folder / "loss.png", loss_curve_png(result.history))]
        results.append(result.latents)
        # the combined file follows every finished target: after a kill it names exactly the targets whose
        # per-target files this run wrote, never the previous run's latents
        # (from the second target on it replaces this run's own file, which the overwrite rule allows)
        with overwrite_policy(True) if len(results) > 1 else contextlib.nullcontext():
            combined = save_latents(outdir / "projected_w.npz", concat(results))
        summary.append({"target": str(path), "space": result.latents.space, "lpips": result.lpips,
                        "mse": result.mse, "start_lpips": result.start_lpips, "start_mse": result.start_mse,
                        "files": [str(f) for f in written]})
    return {"targets": summary, "latents": str(combined), "steps": settings.steps, "seed": settings.seed,
            "space": results[0].space, "lpips_weights": "pretrained" if lpips.pretrained else "random-init"}
