"""The latent-space modes of `nat-gan sample`: --w, --style-mix, --direction and walks (--interpolate).

Kept apart from ``sample.py`` so the seed/grid path stays as it is; the work is in ``natgan.latent``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from natgan.cli.console import console, emit_json
from natgan.errors import ConfigError


def latent_mode(interpolate: Optional[str], w_file: Optional[Path], style_mix: Optional[str],
                mix_with: Optional[str], layers: Optional[str], direction: Optional[str], video: str,
                walk_space: str, loop: bool) -> Optional[str]:
    """Which latent mode the options ask for (None: seeds or a grid), or a usage error."""
    from natgan.latent.walk import WALK_SPACES, parse_walks
    from natgan.sampling.video import parse_video_formats

    for option, value in (("--interpolate", interpolate), ("--style-mix", style_mix), ("--with", mix_with),
                          ("--layers", layers), ("--direction", direction), ("--w", w_file)):
        if value is not None and not str(value).strip():
            raise ConfigError(f"{option} '': expected a value (or leave the option out)")
    formats = parse_video_formats(video)
    if walk_space not in WALK_SPACES:
        raise ConfigError(f"--space '{walk_space}': expected one of {', '.join(WALK_SPACES)}")
    walk_options = formats != ["gif"] or walk_space != "w" or loop
    if walk_options and not interpolate:
        raise ConfigError("--video/--space/--loop shape an --interpolate walk; add --interpolate SEEDS")
    if (mix_with or layers) and not style_mix:
        raise ConfigError("--with/--layers belong to --style-mix ROW_SEEDS")
    if style_mix and not (mix_with and layers):
        raise ConfigError("--style-mix needs --with COLUMN_SEEDS and --layers (e.g. --layers 0-6)")
    modes = [name for name, on in (("style-mix", style_mix), ("direction", direction), ("walk", interpolate))
             if on]
    if w_file and not direction:
        modes.append("w")
    if len(modes) > 1:
        raise ConfigError(f"choose one of --style-mix, --direction, --interpolate, --w (got {', '.join(modes)})")
    if modes == ["walk"]:
        parse_walks(interpolate)
    return modes[0] if modes else None


def run_latent_mode(mode: str, *, ckpt: Path, seeds: Optional[str], outdir: Path, grid: Optional[str], fmt: str,
                    trunc: float, interpolate: Optional[str], frames: int, fps: float, batch: Optional[int],
                    device: str, no_ema: bool, noise_mode: str, w_file: Optional[Path], style_mix: Optional[str],
                    mix_with: Optional[str], layers: Optional[str], direction: Optional[str], strength: str,
                    steps: int, video: str, walk_space: str, loop: bool, quiet: bool, json_out: bool,
                    class_opt: Optional[str] = None) -> None:
    from natgan.data.progress import ProgressBar
    from natgan.latent import edit, mixing, sefa, walk
    from natgan.latent.space import format_layers, parse_layers
    from natgan.fsutil import output_in
    from natgan.latent.store import load_latents
    from natgan.sampling import auto_batch_size, format_seeds, load_generator, parse_seeds, \
        resolve_device
    from natgan.sampling.export import grid_image, save_png, to_hwc
    from natgan.fsutil import refuse_existing
    from natgan.sampling.export import MAX_GRID_CELLS
    from natgan.sampling.video import parse_video_formats

    if grid or (fmt != "png" and mode != "walk"):
        raise ConfigError(f"--{mode} writes its own figure; drop --grid/--format")
    strengths = edit.parse_strengths(strength, steps) if mode == "direction" else None
    dir_spec = sefa.load_direction(direction) if mode == "direction" else None
    stored = load_latents(w_file) if w_file else None
    if stored is not None and trunc != 1.0:
        raise ConfigError("--trunc does not apply to stored latents (--w); drop it")
    dev = resolve_device(device)
    loaded = load_generator(ckpt, ema=not no_ema, device=dev)
    G = loaded.for_class(class_opt)  # a conditional generator bound to its --class (truncation: that class's mean)
    batch_size = batch or auto_batch_size(dev, int(G.resolution))
    w_avg = loaded.centre(trunc, G)  # as `sample --trunc`: the stored centre, else G's (its class's) mean w
    info = {**loaded.describe(), "device": str(dev), "trunc": trunc, "trunc_centre": loaded.centre_kind(trunc),
            "noise_mode": noise_mode, "mode": mode,
            "outdir": str(outdir), **({"class": loaded.class_names()[G.label]} if G is not loaded.G else {})}
    outdir = Path(outdir)

    if mode == "w":
        images = edit.images_from_stored(G, stored, path=w_file, batch_size=batch_size, noise_mode=noise_mode)
        files = [save_png(output_in(outdir, f"{name}.png", f"{w_file}: names"), img)
                 for name, img in zip(stored.names, to_hwc(images))]
        info.update(latents=str(w_file), space=stored.space, images=len(files))
        message = f"wrote {len(files)} image(s) from {w_file}: {outdir}"
    elif mode == "style-mix":
        rows, cols = parse_seeds(style_mix, option="--style-mix"), parse_seeds(mix_with, option="--with")
        if (len(rows) + 1) * (len(cols) + 1) > MAX_GRID_CELLS:
            raise ConfigError(f"--style-mix {style_mix} --with {mix_with}: a {len(cols) + 1:,}x{len(rows) + 1:,} "
                              f"figure; at most {MAX_GRID_CELLS} images in one PNG")
        chosen = parse_layers(layers, G)
        with ProgressBar(len(rows) * (len(cols) + 1) + len(cols), "mixing", enabled=not quiet) as bar:
            parts = mixing.style_mixing_images(G, rows, cols, chosen, psi=trunc, w_avg=w_avg, batch_size=batch_size,
                                               noise_mode=noise_mode)
            bar.advance(bar.total)
        files = [save_png(outdir / "stylemix.png", mixing.style_mixing_figure(*parts))]
        info.update(rows=format_seeds(rows), columns=format_seeds(cols), layers=format_layers(chosen))
        message = f"wrote a {len(rows)}x{len(cols)} style-mixing grid (layers {format_layers(chosen)}): {files[0]}"
    elif mode == "direction":
        if stored is not None:
            base = stored.to(next(iter(G.parameters())).device).synthesis_input(G, w_file).detach()
            rows_label = f"{len(stored)} latent(s) from {w_file}"
        else:
            seed_list = parse_seeds(seeds) if seeds else [0, 1, 2, 3]
            base = edit.base_latents(G, seed_list, psi=trunc, w_avg=w_avg)
            rows_label = f"seeds {format_seeds(seed_list)}"
        if len(base) * len(strengths) > MAX_GRID_CELLS:
            raise ConfigError(f"--steps {steps} x {len(base):,} rows: at most {MAX_GRID_CELLS} images in one strip")
        images = edit.direction_strip(G, base, dir_spec, strengths, batch_size=batch_size, noise_mode=noise_mode,
                                      spec=direction)
        path = outdir / f"direction{dir_spec.index}.png"
        files = [save_png(path, grid_image(images, len(strengths), len(base)))]
        info.update(direction=direction, strengths=strengths, rows=rows_label, space=dir_spec.space,
                    layers=format_layers(dir_spec.layers))
        message = f"wrote a {len(base)}x{len(strengths)} edit strip ({rows_label}): {files[0]}"
    else:
        walks = walk.parse_walks(interpolate)
        formats = parse_video_formats(video)
        if seeds:
            raise ConfigError("--interpolate makes its own frames; drop --seeds")
        refuse_existing(walk.walk_outputs(outdir, walk.walk_stem(walks, space=walk_space, loop=loop), fmt=fmt,
                                          videos=formats))  # before the progress bar starts
        with ProgressBar(frames * len(walks), "rendering", enabled=not quiet) as bar:
            files = walk.write_walk(G, walks, frames, outdir, fmt=fmt, videos=formats, fps=fps, space=walk_space,
                                    loop=loop, psi=trunc, w_avg=w_avg, batch_size=batch_size, noise_mode=noise_mode,
                                    progress=bar.advance)
        info.update(walks=["/".join(",".join(map(str, w)) for w in walks)], frames=frames, fps=fps,
                    space=walk_space, loop=loop, video=formats)
        frames_at = files[0].parent if fmt == "png" else files[0]
        message = f"wrote a {frames}-frame walk ({len(walks)} walk(s), {walk_space} space): frames {frames_at}, " + \
                  ", ".join(map(str, files[-len(formats):]))
    info["files"] = [str(f) for f in files]
    if json_out:
        emit_json(info)
    else:
        console.print(message)
