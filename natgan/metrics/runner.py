"""The FID runner: generator or dataset vs a reference, with the protocol stated in the result.

Every result records what makes an FID comparable: the mode (resize + Inception variant), the
extractor, how many images on each side, the latent seeds, truncation, and the reference's identity
(content hash, size, count), plus timings.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from natgan import __version__
from natgan.data.progress import ProgressBar
from natgan.errors import ConfigError
from natgan.metrics.extractors import as_extractor, build_inception
from natgan.metrics.pipeline import generator_features
from natgan.metrics.reference import Reference, dataset_reference, load_reference, matched_resolutions
from natgan.metrics.stats import Statistics, frechet_distance, kernel_inception_distance, statistics
from natgan.metrics.weights import MODES
from natgan.devices import resolve_device
from natgan.noise_modes import DEFAULT_NOISE_MODE
from natgan.sampling.generate import ImageGenerator, eval_mode, model_device
from natgan.sampling.seeds import format_seeds


MAX_FID_IMAGES = 2_000_000  # 16 GiB of 2048-d float32 features


def _check(mode: str, num: int | None, name: str = "--num") -> None:
    if mode not in MODES:
        raise ConfigError(f"--mode '{mode}': expected one of {', '.join(MODES)}")
    if num is not None and (not isinstance(num, int) or num < 2):
        raise ConfigError(f"{name} {num!r}: FID needs at least 2 images")
    if num is not None and num > MAX_FID_IMAGES:
        raise ConfigError(f"{name} {num:,}: at most {MAX_FID_IMAGES:,} images (their features alone would take "
                          f"{num * 2048 * 4 / 2**30:,.0f} GiB; the papers use 50,000)")


def _extractor(extractor: Any, mode: str, device: torch.device, inception: str | Path | None):
    """The extractor to use and the mode it really applies (a given FeatureExtractor's own mode wins)."""
    if extractor is None:
        ext = build_inception(mode, device=device, inception=inception)
    else:
        ext = as_extractor(extractor, mode)
    return ext, ext.mode


def _scores(gen: Statistics, ref: Statistics, *, kid: bool, seed: int) -> dict:
    out = {"fid": frechet_distance(gen, ref)}
    if kid:
        out["kid"] = kernel_inception_distance(ref.feats, gen.feats, seed=seed)
    return out


def _result(scores: dict, *, mode: str, extractor, generated: dict, num_gen: int, ref: Reference,
            timings: dict, extra: dict | None = None) -> dict:
    return {
        "metric": "fid",
        **scores,
        "mode": mode,
        "protocol": getattr(extractor, "protocol", None)
        or f"clean-fid '{mode}' resizing, custom feature extractor '{extractor.describe()}'",
        "extractor": extractor.describe(),
        "num_gen": num_gen,
        "num_ref": ref.stats.count,
        "generated": generated,
        "reference": ref.identity,
        "reference_cached": ref.cached,
        "timings": timings,
        **(extra or {}),
        "natgan_version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def fid_for_generator(G: nn.Module, reference: str, *, num: int, mode: str = "legacy_pytorch", batch_size: int = 64,
                      device: str | torch.device = "cpu", extractor: Any = None, progress: bool = True,
                      seed: int = 0, num_ref: int | None = None, kid: bool = False, psi: float = 1.0,
                      noise_mode: str | None = DEFAULT_NOISE_MODE, inception: str | Path | None = None, use_cache: bool = True,
                      workers: int | None = None, overlap: bool = True) -> dict:
    """FID of ``num`` images of ``G`` against ``reference`` (dataset path or ``cleanfid:NAME:RES:SPLIT``).

    Image ``i`` uses the latent of seed ``seed + i`` (the image ``nat-gan sample --seeds`` writes for that
    seed), quantised to 8 bits and embedded without touching the disk; generation runs in a background
    thread ahead of the extractor. ``G`` stays on its own device (``device`` places the extractor) and
    is put in eval mode for the duration. ``extractor``: None (the mode's Inception, weights from
    ``inception`` / ``$NATGAN_INCEPTION`` / the cache), a :class:`FeatureExtractor` (whose own mode then
    applies), or any callable ``uint8 [B, 3, H, W] -> [B, D]``. ``noise_mode`` (models with noise inputs)
    defaults to ``const`` (:data:`~natgan.noise_modes.DEFAULT_NOISE_MODE`, as ``sample``), so the score
    does not depend on the batch size; ``random`` (NVIDIA's metrics) is drawn from a global RNG seeded with
    ``seed`` inside a forked RNG state, so the caller's random stream is untouched; None keeps the model's.
    """
    _check(mode, num)
    _check(mode, num_ref, "--num-ref")
    t0 = time.perf_counter()
    device = resolve_device(device, option="device")
    ext, mode = _extractor(extractor, mode, device, inception)
    ref = load_reference(reference, ext, resolution=int(G.resolution), num=num_ref, kid=kid, batch_size=batch_size,
                         workers=workers, use_cache=use_cache, progress=progress)
    t1 = time.perf_counter()
    seeds = range(seed, seed + num)
    gen_device = model_device(G)
    # Models drawing random noise consume the global RNG: seed it for this run only, leaving the
    # caller's (e.g. the trainer's) random stream exactly where it was.
    with torch.random.fork_rng(devices=[gen_device] if gen_device.type == "cuda" else []), eval_mode(G, noise_mode):
        torch.manual_seed(seed)
        gen = ImageGenerator(G, batch_size=batch_size, psi=psi)
        with ProgressBar(num, "generated features", enabled=progress) as bar:
            feats = generator_features(gen, seeds, ext, advance=bar.advance, overlap=overlap)
    t2 = time.perf_counter()
    gen_stats = statistics(feats, keep_feats=kid, side="generated images")
    scores = _scores(gen_stats, ref.stats, kid=kid, seed=seed)
    t3 = time.perf_counter()
    generated = {"kind": "generator", "resolution": int(G.resolution), "seeds": format_seeds(seeds), "trunc": psi,
                 "noise_mode": getattr(G, "noise_mode", None) if noise_mode is None else noise_mode,
                 "normalization": G.normalization}
    timings = {"reference_s": round(t1 - t0, 3), "generate_and_embed_s": round(t2 - t1, 3),
               "score_s": round(t3 - t2, 3), "total_s": round(t3 - t0, 3),
               "images_per_s": round(num / max(t2 - t1, 1e-9), 2)}
    extra = {"batch_size": gen.batch_size, "device": str(device)}
    warnings = _resolution_warning(ref.identity, int(G.resolution))
    if warnings:
        extra["warnings"] = warnings
    return _result(scores, mode=mode, extractor=ext, generated=generated, num_gen=num, ref=ref, timings=timings,
                   extra=extra)


def fid_for_datasets(a: str | Path, b: str, *, mode: str = "legacy_pytorch", num: int | None = None,
                     num_ref: int | None = None, batch_size: int = 64, device: str | torch.device = "cpu",
                     extractor: Any = None, progress: bool = True, kid: bool = False,
                     inception: str | Path | None = None, use_cache: bool = True, workers: int | None = None) -> dict:
    """FID of dataset ``a`` (``num`` images, default all) against ``b`` (dataset or published name).

    Each side is read at its own size and resized by the extractor, as its protocol does, so FID(a, b) ==
    FID(b, a); an LMDB that stores the other side's size serves it (see :func:`matched_resolutions`). Sizes
    that differ are reported in the result and warned about.
    """
    _check(mode, num)
    _check(mode, num_ref, "--num-ref")
    t0 = time.perf_counter()
    device = resolve_device(device, option="device")
    ext, mode = _extractor(extractor, mode, device, inception)
    res_a, res_b = matched_resolutions(a, b)
    side_a = dataset_reference(a, ext, resolution=res_a, num=num, kid=kid, batch_size=batch_size, workers=workers,
                               use_cache=use_cache, progress=progress, label="A")
    resolution = side_a.identity["resolution"]
    side_b = load_reference(b, ext, resolution=res_b, num=num_ref, kid=kid, batch_size=batch_size, workers=workers,
                            use_cache=use_cache, progress=progress)
    t1 = time.perf_counter()
    scores = _scores(side_a.stats, side_b.stats, kid=kid, seed=0)
    t2 = time.perf_counter()
    timings = {"a_s": round(side_a.seconds, 3), "reference_s": round(side_b.seconds, 3),
               "score_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)}
    generated = {**side_a.identity, "cached": side_a.cached}
    extra = {"device": str(device)}
    warnings = _resolution_warning(side_b.identity, resolution)
    if warnings:
        extra["warnings"] = warnings
    return _result(scores, mode=mode, extractor=ext, generated=generated, num_gen=side_a.stats.count, ref=side_b,
                   timings=timings, extra=extra)


def _resolution_warning(identity: dict, resolution: int) -> list[str]:
    ref_res = identity.get("resolution")
    if ref_res and ref_res != resolution:
        return [f"images are {resolution}px but the reference is {ref_res}px; each side is resized by the "
                f"extractor from its own size, but such numbers are not comparable with same-size protocols"]
    return []
