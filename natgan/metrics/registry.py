"""The metric registry: one :class:`Metric` entry per metric, and the feature networks they read.

An entry names its feature set (which network embeds the images), what it needs from the reference
(nothing, statistics, or every feature vector), whether it needs the generator itself, its outputs
(with which direction is better, for ``train.keep_best``), and its function of a :class:`MetricInputs`.
The runner embeds every image once per feature set and hands the same arrays to every metric reading
that set; the CLI, the trainer, the checkpoint's metrics history and TensorBoard iterate this table.

Adding a metric = one entry in :data:`METRICS` (its code in a module of its own) plus its test; see
docs/architecture.md. This module imports nothing heavy, so recipes can validate metric names cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from natgan.errors import ConfigError
from natgan.metrics.manifold import DC_K, PR_K

Better = Literal["lower", "higher", "none"]
RealNeed = Literal["none", "statistics", "features"]
MANIFOLD = "manifold"   # a metric's `features`: the set chosen by eval.pr_features / --pr-features
FEATURE_SETS = ("inception", "vgg16")


@dataclass(frozen=True)
class Output:
    """One number a metric reports: its key in results/TensorBoard and which direction is better."""

    key: str
    better: Better
    fmt: str = ".4f"


@dataclass
class MetricInputs:
    """Everything a metric function may read; features are computed once and shared by all metrics."""

    gen: dict[str, Any]                 # feature set -> generated features [N, D] (numpy)
    ref: dict[str, Any]                 # feature set -> natgan.metrics.reference.Reference
    extractors: dict[str, Any]          # feature set -> extractor (its .protocol / .describe(), logits_weight)
    mode: str                           # the Inception protocol (clean-fid mode)
    pr_features: str = "vgg16"          # the feature set of the MANIFOLD metrics (pr, dc)
    seed: int = 0
    num: int = 0                        # generated images (generator metrics draw their own)
    batch_size: int = 64
    device: Any = "cpu"
    G: Any = None                       # the generator (None when scoring datasets)
    weights_dir: Any = None             # --weights / $NATGAN_WEIGHTS, for metrics that load their own networks
    options: dict[str, Any] = field(default_factory=dict)   # metric-specific options (CLI/recipe pass-through)
    use_cache: bool = True              # metrics that read reference images themselves (intra-FID) cache as FID
    workers: int | None = None          # decoder processes for those reference images (None: by machine)
    memo: dict[Any, Any] = field(default_factory=dict)

    def shared(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` for all metrics of this evaluation (e.g. one k-NN pass for pr and dc)."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def features_protocol(self, feature_set: str) -> str:
        ext = self.extractors[feature_set]
        return getattr(ext, "protocol", None) or f"custom feature extractor '{ext.describe()}'"


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    outputs: tuple[Output, ...]
    compute: Callable[[MetricInputs], dict]   # -> {output key: float, "protocol": str, ...extra facts}
    features: str | None = "inception"        # a FEATURE_SETS name, MANIFOLD, or None (e.g. generator metrics)
    real: RealNeed = "statistics"
    gen: RealNeed = "features"                # of the generated side: "statistics" when mean/cov suffice (FID),
                                              # "none" when the metric generates its own images (intra-FID)
    generator: bool = False                   # needs the generator itself (refused for dataset vs dataset)
    conditional: bool = False                 # needs a class-conditional generator and a labelled reference
    min_gen: int = 2

    def feature_set(self, pr_features: str) -> str | None:
        return pr_features if self.features == MANIFOLD else self.features


# ------------------------------------------------------------------------------------ the metrics


def _fid(x: MetricInputs) -> dict:
    from natgan.metrics.stats import frechet_distance, statistics

    gen = x.shared(("stats", "inception"), lambda: statistics(x.gen["inception"]))
    return {"fid": frechet_distance(gen, x.ref["inception"].stats),
            "protocol": f"FID (Heusel et al. 2017, clean-fid's Fréchet distance) on {x.features_protocol('inception')}"}


def _kid(x: MetricInputs) -> dict:
    from natgan.metrics.stats import kid_with_spread

    r = kid_with_spread(x.ref["inception"].stats.feats, x.gen["inception"], seed=x.seed)
    return {"kid": r.mean, "kid_std": r.std, "kid_subset_size": r.subset_size, "kid_subsets": r.subsets,
            "protocol": f"KID (Bińkowski et al. 2018, clean-fid's estimator: cubic polynomial kernel, mean and std "
                        f"over {r.subsets} subsets of {r.subset_size} (min of both sides and 1000), seed {x.seed}) "
                        f"on {x.features_protocol('inception')}"}


def _manifold(keys: tuple[str, ...], protocol: str) -> Callable[[MetricInputs], dict]:
    """A k-NN metric's function: pr and dc read one shared pass of :func:`natgan.metrics.manifold.manifold_scores`."""

    def compute(x: MetricInputs) -> dict:
        from natgan.metrics.manifold import DC_K, PR_K, manifold_scores

        fs = x.pr_features
        scores = x.shared(("manifold", fs), lambda: manifold_scores(x.ref[fs].stats.feats, x.gen[fs], device=x.device))
        return {**{k: scores[k] for k in keys},
                "protocol": f"{protocol.format(pr_k=PR_K, dc_k=DC_K)} on {x.features_protocol(fs)}"}

    return compute


_pr = _manifold(("precision", "recall"), "precision/recall (Kynkäänniemi et al. 2019, as stylegan2-ada-pytorch): "
                                         "k = {pr_k} nearest neighbours, Euclidean, distance <= radius, float32 "
                                         "distances (as torch-fidelity and the TF code; stylegan2-ada-pytorch casts "
                                         "to float16)")
_dc = _manifold(("density", "coverage"), "density/coverage (Naeem et al. 2020, as prdc): k = {dc_k} nearest real "
                                         "neighbours, Euclidean, distance < radius")


def _is(x: MetricInputs) -> dict:
    import numpy as np

    from natgan.errors import NatGanError
    from natgan.metrics.inception_score import SPLITS, inception_score

    ext = x.extractors["inception"]
    weight = getattr(ext, "logits_weight", None)
    if weight is None:
        raise NatGanError(f"IS needs the Inception classifier; the feature extractor '{ext.describe()}' has no "
                          f"logits_weight")
    logits = np.asarray(x.gen["inception"], dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    mean, std = inception_score(logits, SPLITS)
    return {"is": mean, "is_std": std,
            "protocol": f"IS (Salimans et al. 2016): {SPLITS} splits, mean and std, softmax of the unbiased logits "
                        f"(pool3 x classifier weight, no bias, {logits.shape[1]} classes) of "
                        f"{x.features_protocol('inception')}"}


def _ppl(x: MetricInputs) -> dict:
    """Perceptual path length of the generator itself (its code: :mod:`natgan.metrics.ppl`).

    ``x.options``: ``ppl_crop`` (FFHQ face crop), ``ppl_sampling`` (``end`` / ``full``) and ``lpips``
    (an already built LPIPS module, e.g. random weights in tests; default: loaded from the weights directory).
    """
    from natgan.metrics.lpips import load_lpips
    from natgan.metrics.ppl import perceptual_path_length

    lpips = x.options.get("lpips") or load_lpips(x.weights_dir, device=x.device)
    cond = x.options.get("conditioning") or {}
    out = perceptual_path_length(x.G, lpips, n=x.num, batch=max(1, x.batch_size // 2), seed=x.seed,
                                 epsilon=1e-4, sampling=x.options.get("ppl_sampling", "end"),
                                 crop=bool(x.options.get("ppl_crop", False)), label_pool=cond.get("pool"))
    p = out["protocol"]
    return {"ppl": out["ppl"], "weights_sha256": p["lpips_weights_sha256"],
            "protocol": (f"PPL (Karras et al. 2019, as stylegan2-ada-pytorch): {p['path']}, sampling {p['sampling']}, "
                         f"epsilon {p['epsilon']:g}, LPIPS {p['lpips']}, {p['n']} samples, face crop "
                         f"{'on' if p['crop'] else 'off'} (LPIPS input {p['lpips_input']}), "
                         f"{p['percentiles'][0]:g}/{p['percentiles'][1]:g} "
                         f"percentile filter, seed {p['seed']}"
                         + (", labels drawn from the dataset per path" if cond else ""))}


def _intra_fid(x: MetricInputs) -> dict:
    """Per-class FID of a class-conditional generator (its code: :mod:`natgan.metrics.intra_fid`)."""
    from natgan.metrics.intra_fid import intra_fid

    cond = x.options["conditioning"]  # the runner refused an unconditional G (check_conditional)
    names = cond["class_names"]
    per_class = max(2, x.num // len(names))
    out = intra_fid(x.G, cond["source"], x.extractors["inception"], per_class=per_class, seed=x.seed,
                    batch_size=x.batch_size, psi=x.options.get("psi", 1.0),
                    w_avg=x.options.get("w_avg"), class_names=names, use_cache=x.use_cache, workers=x.workers)
    return {**out, "per_class_generated": per_class,
            "protocol": f"intra-FID (Miyato & Koyama 2018): mean over {len(names)} classes of the FID of {per_class} "
                        f"generated images of the class (seeds {x.seed}-{x.seed + per_class - 1}) against the real "
                        f"images of that class, on {x.features_protocol('inception')}"}


# pr and dc share one k-NN pass computing radii for k = PR_K and DC_K on both sides: each side needs more
# feature vectors than the larger k (checked before any feature is computed, not after)
KNN_MIN_IMAGES = max(PR_K, DC_K) + 1

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", "FID", (Output("fid", "lower"),), _fid, gen="statistics"),
    Metric("kid", "KID", (Output("kid", "lower", ".6f"), Output("kid_std", "none", ".6f")), _kid, real="features"),
    Metric("pr", "precision/recall", (Output("precision", "higher"), Output("recall", "higher")), _pr,
           features=MANIFOLD, real="features", min_gen=KNN_MIN_IMAGES),
    Metric("dc", "density/coverage", (Output("density", "higher"), Output("coverage", "higher")), _dc,
           features=MANIFOLD, real="features", min_gen=KNN_MIN_IMAGES),  # pr and dc share one k-NN pass
    Metric("is", "IS", (Output("is", "higher", ".3f"), Output("is_std", "none", ".3f")), _is, real="none",
           min_gen=10),
    Metric("ppl", "PPL", (Output("ppl", "lower", ".2f"),), _ppl, features=None, real="none", generator=True,
           min_gen=1),
    # reads the per-class real images and generates per class itself (gen "none": the shared generated set is not
    # made for it alone); "inception" so the runner builds (and shares) the extractor
    Metric("intra_fid", "intra-FID", (Output("intra_fid", "lower"),), _intra_fid, real="none", gen="none",
           generator=True, conditional=True),
)}


# ------------------------------------------------------------------------------------ lookups


def parse_metrics(value: str | list[str] | tuple[str, ...], *, source: str = "--metrics") -> list[str]:
    """``"fid,kid"`` or ``["fid", "kid"]`` -> validated names in the given order, duplicates dropped."""
    names = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in names:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name not in METRICS:
            raise ConfigError(f"{source} '{raw}': unknown metric; expected some of {', '.join(METRICS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"{source}: no metric named; expected some of {', '.join(METRICS)}")
    return out


def check_conditional(names: list[str], num_classes: int, where: str = "") -> None:
    """A metric that only a class-conditional generator has (intra-FID) refused for an unconditional one, before
    any work (and, for ``eval.metrics``, before training starts)."""
    if num_classes:
        return
    for name in names:
        if METRICS[name].conditional:
            raise ConfigError(f"{where}metric '{name}' needs a class-conditional generator (model.num_classes > 0) "
                              f"and a labelled reference dataset; this model is unconditional")


def outputs() -> dict[str, Output]:
    """Every output key of every metric (``fid``, ``precision``, ...), for keep_best and logging."""
    return {o.key: o for m in METRICS.values() for o in m.outputs}


def metric_of_output(key: str) -> Metric | None:
    return next((m for m in METRICS.values() if any(o.key == key for o in m.outputs)), None)


def scalars(result: dict, names: list[str]) -> dict[str, float]:
    """The numbers of ``names`` found in a result (what TensorBoard and keep_best read)."""
    found = {}
    for name in names:
        for o in METRICS[name].outputs:
            if isinstance(result.get(o.key), (int, float)):
                found[o.key] = float(result[o.key])
    return found


def is_better(key: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    better = outputs()[key].better
    return value < best if better == "lower" else value > best if better == "higher" else False


def numbers_line(result: dict, sep: str = "   ") -> str:
    """``FID 12.3456   precision 0.7120 ...``: a result's outputs, each in its metric's format (CLI and log)."""
    names = result.get("metrics") or ["fid"]
    return sep.join(f"{o.key.upper() if o.key in ('fid', 'kid', 'is') else o.key} {result[o.key]:{o.fmt}}"
                    for name in names for o in METRICS[name].outputs if isinstance(result.get(o.key), (int, float)))
