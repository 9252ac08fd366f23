"""The metric runner: a generator or a dataset vs a reference, for any selection of registered metrics.

Images are embedded once per feature set (Inception, VGG16) and every metric reading that set gets the
same arrays; generated images are produced once for all extractors. Every result records what makes
its numbers comparable: per metric the protocol (features, k, splits ...), the mode, how many images on
each side, the latent seeds, truncation, the reference's identity (content hash, size, count), timings.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from natgan import __version__
from natgan.data.progress import FirstBatchEstimate, ProgressBar
from natgan.errors import ConfigError, DataError
from natgan.metrics import published
from natgan.metrics.extractors import as_extractor, build_inception
from natgan.metrics.pipeline import generator_features
from natgan.metrics.reference import Reference, dataset_reference, load_reference, matched_resolutions
from natgan.metrics.registry import FEATURE_SETS, METRICS, Metric, MetricInputs, check_conditional, parse_metrics
from natgan.metrics.weights import MODES, WEIGHTS, MissingWeights, locate, missing_error
from natgan.devices import resolve_device
from natgan.noise_modes import METRIC_NOISE_MODE
from natgan.sampling.classes import dataset_labels, num_classes_of
from natgan.sampling.generate import ImageGenerator, eval_mode, model_device
from natgan.sampling.seeds import format_seeds

_NEED = {"none": 0, "statistics": 1, "features": 2}


MAX_FID_IMAGES = 2_000_000  # 16 GiB of 2048-d float32 features


def _check(mode: str, num: int | None, name: str = "--num") -> None:
    if mode not in MODES:
        raise ConfigError(f"--mode '{mode}': expected one of {', '.join(MODES)}")
    if num is not None and (not isinstance(num, int) or num < 2):
        raise ConfigError(f"{name} {num!r}: metrics need at least 2 images")
    if num is not None and num > MAX_FID_IMAGES:
        raise ConfigError(f"{name} {num:,}: at most {MAX_FID_IMAGES:,} images (their features alone would take "
                          f"{num * 2048 * 4 / 2**30:,.0f} GiB; the papers use 50,000)")


def _plan(names: list[str], pr_features: str, *, generator: bool, num: int | None) -> tuple[list[Metric], dict]:
    """The metrics and, per feature set, how much of the reference they need (0 none, 1 stats, 2 features)."""
    if pr_features not in FEATURE_SETS:
        raise ConfigError(f"--pr-features '{pr_features}': expected one of {', '.join(FEATURE_SETS)}")
    metrics = [METRICS[n] for n in parse_metrics(names, source="metrics")]
    needs: dict[str, int] = {}
    for m in metrics:
        if m.generator and not generator:
            raise ConfigError(f"metric '{m.name}' needs a generator (--ckpt), not a set of images")
        if num is not None and num < m.min_gen:
            raise ConfigError(f"--num {num}: metric '{m.name}' needs at least {m.min_gen} generated images")
        fs = m.feature_set(pr_features)
        if fs is not None:
            needs[fs] = max(needs.get(fs, 0), _NEED[m.real])
    return metrics, needs


def _extractors(needs: dict, *, extractor: Any, extractors: dict | None, mode: str, device: torch.device,
                inception: str | Path | None, weights_dir: str | Path | None, lpips: bool = False) -> dict:
    """One extractor per feature set: given ones first (tests, notebooks), else the real networks.

    Every weights file the run needs (the extractors', and LPIPS's when ``lpips``: PPL loads it later) is
    looked for here, and all missing ones are named in one error: not the first one per attempt."""
    given = dict(extractors or {})
    if extractor is not None:
        given.setdefault("inception", extractor)
    out, missing = {}, []
    for fs in needs:
        try:
            if fs in given:
                out[fs] = as_extractor(given[fs], mode)
            elif fs == "inception":
                out[fs] = build_inception(mode, device=device, inception=inception, weights_dir=weights_dir)
            else:
                from natgan.metrics.vgg import build_vgg16

                out[fs] = build_vgg16(device=device, weights_dir=weights_dir)
        except MissingWeights as exc:
            missing.append(exc)
    if lpips:
        for name in ("vgg16", "lpips-vgg"):
            if any(exc.spec.filename == WEIGHTS[name].filename for exc in missing):
                continue
            try:
                locate(name, weights_dir=weights_dir, purpose="--metrics ppl (LPIPS)")
            except MissingWeights as exc:
                missing.append(exc)
    if missing:
        raise missing_error(missing)
    return out


class _Together:
    """Several extractors fed the same images: uint8 batch -> {feature set: features}."""

    def __init__(self, extractors: dict):
        self.extractors = extractors

    def __call__(self, images: torch.Tensor) -> dict:
        return {fs: ext(images) for fs, ext in self.extractors.items()}


def _covariance_sets(metrics: list[Metric], pr_features: str) -> set[str]:
    """Feature sets whose covariance a chosen metric uses (FID's Fréchet distance); the others skip np.cov."""
    return {fs for m in metrics if m.real == "statistics" and (fs := m.feature_set(pr_features)) is not None}


def _references(reference: str | Path | None, needs: dict, extractors: dict, *, covariance: set[str],
                **kw) -> dict[str, Reference]:
    refs = {}
    for fs, need in needs.items():
        if need == 0:
            continue
        if reference is None:
            raise ConfigError("these metrics compare against real images: give a reference (--data/--ref)")
        if fs != "inception" and published.is_published(str(reference)):
            raise DataError(f"reference '{reference}': clean-fid publishes Inception statistics only; {fs} metrics "
                            f"need reference images (a dataset path)")
        refs[fs] = load_reference(reference, extractors[fs], kid=need == 2, covariance=fs in covariance, **kw)
    return refs


def _score(metrics: list[Metric], inputs: MetricInputs) -> tuple[dict, dict]:
    scores, details = {}, {}
    for m in metrics:
        out = m.compute(inputs)
        fs = m.feature_set(inputs.pr_features)
        detail = {"protocol": out.pop("protocol"), "features": fs}
        if fs is not None:   # which network made the features (sha256 prefix of its weights file; "" unknown)
            detail["weights_sha256"] = getattr(inputs.extractors[fs], "weights_id", "")
        if fs in inputs.ref:
            detail["num_ref"] = inputs.ref[fs].stats.count
        details[m.name] = {**detail, **{k: v for k, v in out.items() if k not in {o.key for o in m.outputs}}}
        scores.update({o.key: out[o.key] for o in m.outputs})
    return scores, details


def _result(names: list[str], scores: dict, details: dict, *, mode: str, extractors: dict, refs: dict,
            generated: dict, num_gen: int, timings: dict, extra: dict | None = None) -> dict:
    main = "inception" if "inception" in extractors else next(iter(extractors), None)
    ext = extractors.get(main)
    ref = refs.get("inception") or next(iter(refs.values()), None)
    return {
        "metric": ",".join(names),
        "metrics": names,
        **scores,
        "mode": mode,
        "protocol": (getattr(ext, "protocol", None) or f"clean-fid '{mode}' resizing, custom feature extractor "
                                                       f"'{ext.describe()}'") if ext is not None else None,
        "extractor": ext.describe() if ext is not None else None,
        "details": details,
        "feature_sets": {fs: {"extractor": e.describe(), "protocol": getattr(e, "protocol", None),
                              "weights_sha256": getattr(e, "weights_id", "")} for fs, e in extractors.items()},
        "num_gen": num_gen,
        "num_ref": ref.stats.count if ref else 0,
        "generated": generated,
        "reference": ref.identity if ref else None,
        "reference_cached": all(r.cached for r in refs.values()) if refs else None,
        "timings": timings,
        **(extra or {}),
        "natgan_version": __version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _prepare(metrics, pr_features: str, *, generator: bool, num: int | None, num_ref: int | None, mode: str,
             device, extractor: Any, extractors: dict | None, inception, weights_dir,
             options: dict | None = None) -> tuple:
    """What both evaluations do first: check counts, plan the metrics, pick the device and the extractors.

    Returns ``(names, chosen metrics, needs per feature set, device, extractors, mode)``; the mode is the
    given Inception extractor's own when one is given."""
    _check(mode, num)
    _check(mode, num_ref, "--num-ref")
    names = parse_metrics(metrics, source="metrics")
    chosen, needs = _plan(names, pr_features, generator=generator, num=num)
    device = resolve_device(device, option="device")
    exts = _extractors(needs, extractor=extractor, extractors=extractors, mode=mode, device=device,
                       inception=inception, weights_dir=weights_dir,
                       lpips=any(m.name == "ppl" for m in chosen) and not (options or {}).get("lpips"))
    mode = exts["inception"].mode if "inception" in exts else mode
    return names, chosen, needs, device, exts, mode


def evaluate_generator(G: nn.Module, reference: str | Path | None, *, metrics: list[str] | str = ("fid",), num: int,
                       mode: str = "legacy_pytorch", batch_size: int = 64, device: str | torch.device = "cpu",
                       extractor: Any = None, extractors: dict | None = None, progress: bool = True, seed: int = 0,
                       num_ref: int | None = None, psi: float = 1.0, noise_mode: str | None = METRIC_NOISE_MODE,
                       inception: str | Path | None = None, weights_dir: str | Path | None = None,
                       pr_features: str = "vgg16", use_cache: bool = True, workers: int | None = None,
                       overlap: bool = True, options: dict | None = None, w_avg: torch.Tensor | None = None,
                       on_estimate: Callable[[dict], None] | None = None) -> dict:
    """The ``metrics`` of ``num`` images of ``G`` against ``reference`` (dataset path or ``cleanfid:NAME:RES:SPLIT``).

    Image ``i`` uses the latent of seed ``seed + i`` (the image ``nat-gan sample --seeds`` writes for that
    seed), quantised to 8 bits and embedded by every needed extractor without touching the disk;
    generation runs in a background thread ahead of the extractors. ``G`` stays on its own device
    (``device`` places the extractors and the k-NN distances) and is put in eval mode for the duration.
    ``extractor``: None (the mode's Inception, weights from ``inception`` / ``$NATGAN_INCEPTION`` / the
    weights directory / the cache), a :class:`FeatureExtractor` (whose own mode then applies), or any
    callable ``uint8 [B, 3, H, W] -> [B, D]``; ``extractors`` likewise per feature set (``vgg16``).
    ``noise_mode`` (models with noise inputs) defaults to ``random``
    (:data:`~natgan.noise_modes.METRIC_NOISE_MODE`, the published protocol of NVIDIA's and rosinality's
    metrics), drawn per batch from torch's RNG seeded with the batch's first seed inside a forked RNG
    state (the caller's random stream is untouched), so the score is reproducible for a seed and batch
    size; ``const`` uses the stored maps (batch-size independent, as ``sample``); None keeps the model's.
    ``w_avg``: the truncation centre for ``psi != 1`` (an imported
    checkpoint's ``latent_avg``/``w_avg``); None computes it as ``sample`` does. ``on_estimate`` is called before
    generation starts (``done`` 0) and after the first batch with the extrapolated time of the rest
    (:class:`FirstBatchEstimate`).
    """
    t0 = time.perf_counter()
    check_conditional(parse_metrics(metrics, source="metrics"), num_classes_of(G))
    cond = _conditioning(G, reference)  # a conditional G's labels come from the reference: check it first
    names, chosen, needs, device, exts, mode = _prepare(
        metrics, pr_features, generator=True, num=num, num_ref=num_ref, mode=mode, device=device,
        extractor=extractor, extractors=extractors, inception=inception, weights_dir=weights_dir, options=options)
    refs = _references(reference, needs, exts, resolution=int(G.resolution), num=num_ref, batch_size=batch_size,
                       workers=workers, use_cache=use_cache, progress=progress,
                       covariance=_covariance_sets(chosen, pr_features))
    t1 = time.perf_counter()
    seeds = range(seed, seed + num)
    gen_device = model_device(G)
    feats: dict = {}
    gen = ImageGenerator(G, batch_size=batch_size, psi=psi, w_avg=w_avg,
                         labels=dataset_labels(cond["pool"]) if cond else None)
    # the feature sets some metric reads generated features of (intra-FID generates per class itself)
    shared = {fs: e for fs, e in exts.items() if any(m.gen != "none" and m.feature_set(pr_features) == fs
                                                      for m in chosen)}
    try:
        # Random noise is drawn from the global RNG (seeded per batch by ImageGenerator): fork it for this
        # run, leaving the caller's (e.g. the trainer's) random stream exactly where it was. Scoring runs in the
        # same scope, so metrics that generate their own images (intra-FID per class) use the same eval mode,
        # noise mode and forked stream as the shared set.
        with torch.random.fork_rng(devices=[gen_device] if gen_device.type == "cuda" else []), \
                eval_mode(G, noise_mode):
            torch.manual_seed(seed)
            if on_estimate is not None and exts:  # the plan, after every check and the reference, before the long part
                on_estimate({"total": num, "done": 0, "images_per_s": None, "eta_s": None})
            if shared:
                with ProgressBar(num, "generated features", enabled=progress) as bar:
                    estimate = FirstBatchEstimate(num, on_estimate) if on_estimate is not None else None

                    def advance(n: int) -> None:
                        bar.advance(n)
                        if estimate is not None:
                            estimate.advance(n)

                    feats = generator_features(gen, seeds, _Together(shared), advance=advance, overlap=overlap)
            t2 = time.perf_counter()
            inputs = MetricInputs(gen=feats, ref=refs, extractors=exts, mode=mode, pr_features=pr_features,
                                  seed=seed, num=num, batch_size=batch_size, device=device, G=G,
                                  weights_dir=weights_dir, use_cache=use_cache, workers=workers,
                                  options=dict(options or {}, psi=psi, w_avg=w_avg, noise_mode=noise_mode,
                                               **({"conditioning": cond} if cond else {})))
            scores, details = _score(chosen, inputs)
    finally:
        if cond:
            cond["source"].close()
    t3 = time.perf_counter()
    generated = {"kind": "generator", "resolution": int(G.resolution), "seeds": format_seeds(seeds), "trunc": psi,
                 "trunc_centre": None if psi == 1.0 else ("given" if w_avg is not None else "computed"),
                 "noise_mode": getattr(G, "noise_mode", None) if noise_mode is None else noise_mode,
                 "noise": _noise_protocol(G, noise_mode, gen.batch_size),
                 "normalization": G.normalization,
                 **({"labels": f"class-conditional ({len(cond['class_names'])} classes): the label of image i is "
                               f"that of a dataset image drawn with seed i (stylegan2-ada's conditional protocol: "
                               f"labels follow {cond['path']}'s class distribution); truncation, if any, toward "
                               f"each class's mean w"} if cond else {})}
    timings = {"reference_s": round(t1 - t0, 3), "generate_and_embed_s": round(t2 - t1, 3),
               "score_s": round(t3 - t2, 3), "total_s": round(t3 - t0, 3),
               **({"images_per_s": round(num / max(t2 - t1, 1e-9), 2)} if shared else {})}
    extra = {"batch_size": gen.batch_size, "device": str(device)}
    warnings = [w for r in refs.values() for w in _resolution_warning(r.identity, int(G.resolution))]
    if warnings:
        extra["warnings"] = sorted(set(warnings))
    return _result(names, scores, details, mode=mode, extractors=exts, refs=refs, generated=generated, num_gen=num,
                   timings=timings, extra=extra)


def _conditioning(G: nn.Module, reference: str | Path | None) -> dict | None:
    """For a class-conditional ``G``: the reference dataset's labels, which the generated set's labels follow
    (stylegan2-ada-pytorch's metrics draw each generated image's label from the dataset). None otherwise."""
    k = num_classes_of(G)
    if not k:
        return None
    if reference is None or published.is_published(str(reference)):
        raise ConfigError(f"the generator is class-conditional ({k} classes): its metrics draw labels from the "
                          f"training data, so the reference must be a labelled dataset (--data PATH), not "
                          f"{reference or 'nothing'}")
    from natgan.data import open_dataset
    from natgan.data.labels import check_labels

    source = open_dataset(reference, int(G.resolution))
    check_labels(k, source.class_names, reference)
    return {"pool": torch.as_tensor(source.labels, dtype=torch.long), "class_names": list(source.class_names),
            "source": source, "path": str(reference)}


def _noise_protocol(G: nn.Module, noise_mode: str | None, batch: int) -> str:
    """How the images' noise inputs were made, in words (part of a generator result's protocol)."""
    from natgan.models.contract import noise_inputs

    if not hasattr(G, "noise_mode") or not noise_inputs(G):
        return "no noise inputs"
    mode = noise_mode or G.noise_mode
    return {"random": f"random (published protocol): drawn per batch of {batch} from torch's RNG seeded with the "
                      f"batch's first seed",
            "const": "const: the stored noise maps for every image (not the published protocol)",
            "none": "none: noise inputs disabled (not the published protocol)"}.get(mode, mode)


def _check_side_counts(chosen: list[Metric], sides: dict[str, tuple[Any, int | None, int | None]]) -> None:
    """Each dataset side holds enough images for every chosen metric (pr/dc's k-NN radii need
    ``min_gen`` per side), said before any feature is computed rather than after minutes of work."""
    from natgan.data import open_dataset

    need = max((m.min_gen for m in chosen), default=2)
    for label, (path, resolution, num) in sides.items():
        if not isinstance(path, (str, Path)) or not Path(path).exists():
            continue  # a published statistics name: its size is its own
        count = len(open_dataset(path, resolution))
        count = min(count, num) if num else count
        if count < need:
            worst = next(m for m in chosen if m.min_gen == need)
            raise DataError(f"{label} {path}: {count} image(s); metric '{worst.name}' needs at least {need} "
                            f"on each side")


def evaluate_datasets(a: str | Path, b: str, *, metrics: list[str] | str = ("fid",), mode: str = "legacy_pytorch",
                      num: int | None = None, num_ref: int | None = None, batch_size: int = 64,
                      device: str | torch.device = "cpu", extractor: Any = None, extractors: dict | None = None,
                      progress: bool = True, inception: str | Path | None = None,
                      weights_dir: str | Path | None = None, pr_features: str = "vgg16", use_cache: bool = True,
                      workers: int | None = None) -> dict:
    """The ``metrics`` of dataset ``a`` (``num`` images, default all) against ``b`` (dataset or published name).

    Each side is read at its own size and resized by the extractor, as its protocol does, so FID(a, b) ==
    FID(b, a); an LMDB that stores the other side's size serves it (see :func:`matched_resolutions`). Sizes
    that differ are reported in the result and warned about.
    """
    t0 = time.perf_counter()
    names, chosen, needs, device, exts, mode = _prepare(
        metrics, pr_features, generator=False, num=num, num_ref=num_ref, mode=mode, device=device,
        extractor=extractor, extractors=extractors, inception=inception, weights_dir=weights_dir)
    gen_feats = {m.feature_set(pr_features) for m in chosen if m.gen == "features"}
    res_a, res_b = matched_resolutions(a, b)
    _check_side_counts(chosen, {"A": (a, res_a, num), "B": (b, res_b, num_ref)})
    covariance = _covariance_sets(chosen, pr_features)
    # side A is what is being scored (often a folder of generated images): read from the cache, never stored
    sides = {fs: dataset_reference(a, ext, resolution=res_a, num=num, kid=fs in gen_feats, batch_size=batch_size,
                                   workers=workers, use_cache=use_cache, progress=progress, label="A",
                                   covariance=fs in covariance, store=False) for fs, ext in exts.items()}
    first = next(iter(sides.values()))
    resolution = first.identity["resolution"]
    refs = _references(b, needs, exts, resolution=res_b, num=num_ref, batch_size=batch_size, workers=workers,
                       use_cache=use_cache, progress=progress, covariance=covariance)
    t1 = time.perf_counter()
    inputs = MetricInputs(gen={fs: s.stats.feats for fs, s in sides.items()}, ref=refs, extractors=exts, mode=mode,
                          pr_features=pr_features, seed=0, num=first.stats.count, batch_size=batch_size,
                          device=device, weights_dir=weights_dir,
                          memo={("stats", fs): s.stats for fs, s in sides.items()})
    scores, details = _score(chosen, inputs)
    t2 = time.perf_counter()
    timings = {"a_s": round(sum(s.seconds for s in sides.values()), 3),
               "reference_s": round(sum(r.seconds for r in refs.values()), 3),
               "score_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)}
    generated = {**first.identity, "cached": all(s.cached for s in sides.values())}
    extra = {"device": str(device)}
    warnings = [w for r in refs.values() for w in _resolution_warning(r.identity, resolution)]
    warnings += _mixed_size_warning(first.identity)
    if warnings:
        extra["warnings"] = sorted(set(warnings))
    return _result(names, scores, details, mode=mode, extractors=exts, refs=refs, generated=generated,
                   num_gen=first.stats.count, timings=timings, extra=extra)


def _fid_names(kid: bool) -> list[str]:
    return ["fid", "kid"] if kid else ["fid"]


def fid_for_generator(G: nn.Module, reference: str, *, num: int, kid: bool = False, **kw) -> dict:
    """FID (and KID) of ``num`` images of ``G``: :func:`evaluate_generator` with ``metrics = fid[,kid]``."""
    return evaluate_generator(G, reference, metrics=_fid_names(kid), num=num, **kw)


def fid_for_datasets(a: str | Path, b: str, *, kid: bool = False, **kw) -> dict:
    """FID (and KID) of dataset ``a`` against ``b``: :func:`evaluate_datasets` with ``metrics = fid[,kid]``."""
    return evaluate_datasets(a, b, metrics=_fid_names(kid), **kw)


def _resolution_warning(identity: dict, resolution: int) -> list[str]:
    ref_res = identity.get("resolution")
    out = []
    if ref_res and ref_res != resolution:
        out.append(f"images are {resolution}px but the reference is {ref_res}px; each side is resized by the "
                   f"extractor from its own size, but such numbers are not comparable with same-size protocols")
    out += _mixed_size_warning(identity)
    return out


def _mixed_size_warning(identity: dict) -> list[str]:
    """A folder of several image sizes is served at one size (its first image's) before the extractor."""
    if not identity.get("mixed_sizes"):
        return []
    return [f"{identity['path']} holds images of several sizes ({', '.join(identity['mixed_sizes'])}); all were "
            f"resized to {identity['resolution']}px before the extractor, so the score is not that of each image "
            f"at its own size (resize them to one size first, e.g. with nat-gan prepare)"]
