"""Generator throughput, memory, FLOPs and training-step time for registered models.

``measure_generator`` times ``G(z)`` — mapping network included, ``torch.inference_mode``, one fixed
z — with the official protocol by default on CUDA (batch 1, 10 warm-up, 500 timed rounds with CUDA
events) and at any other batch sizes. ``measure_train_step`` times one full GAN step (D step + G step,
forward and backward, Adam updates). ``benchmark`` does both for several models with the same
settings on the same machine and returns one JSON-ready dict per model.

A class-conditional model (``num_classes > 0``) is measured as it runs in training and sampling: G and D
get labels ``c`` beside z and the images, uniform random classes drawn from the run's seed
(:func:`bench_inputs`); which labels were fed is part of every result (``labels``).
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from natgan.bench.flops import count_flops
from natgan.bench.memory import PeakMemory
from natgan.bench.timing import time_calls
from natgan.devices import PRECISIONS, precision_context, resolve_device
from natgan.errors import ConfigError, NatGanError
from natgan.models import set_requires_grad
from natgan.sampling.classes import num_classes_of

Precision = Literal["fp32", "tf32", "bf16"]
ATTN_BACKENDS = ("torch", "natten", "flex")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BACKEND_ENV = "NATGAN_NA_BACKEND"

OFFICIAL = {"batch": 1, "warmup": 10, "rounds": 500}   # StyleNAT src/throughput.py / default_conf.yaml
CPU_DEFAULTS = {"warmup": 2, "rounds": 5}              # a 2-core CPU cannot afford 500 rounds per model
TRAIN_ROUNDS_CAP = 50


MAX_BATCH = 65536  # far beyond any accelerator's memory at these models' sizes; a typo, not a benchmark


@dataclass
class BenchSettings:
    """Everything that changes a measurement; defaults reproduce the official protocol on CUDA."""

    batches: tuple[int, ...] = (1,)
    warmup: int | None = None          # None: 10 on CUDA, 2 on CPU
    rounds: int | None = None          # None: 500 on CUDA, 5 on CPU
    precision: Precision = "tf32"      # official: fp32 weights with TF32 matmuls
    compile: str | None = None         # a torch.compile mode, or None for eager
    attn_backend: str | None = None    # NATGAN_NA_BACKEND for the run (None: the op's own choice)
    train: bool = False
    train_batch: int | None = None     # None: the largest of ``batches``
    train_rounds: int | None = None    # None: min(rounds, 50)
    device: str = "auto"
    flops: bool = True
    peak_tflops: float | None = None   # the device's peak for this precision, to report the fraction
    threads: int | None = None         # torch intra-op threads (CPU); None: torch's default
    seed: int = 0

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: expected one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.attn_backend is not None and self.attn_backend not in ATTN_BACKENDS:
            raise ConfigError(f"--attn-backend: expected one of {', '.join(ATTN_BACKENDS)}, "
                              f"got '{self.attn_backend}'")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ConfigError(f"--compile: expected one of {', '.join(COMPILE_MODES)}, got '{self.compile}'")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch: expected positive integers, got {list(self.batches)}")
        if any(b > MAX_BATCH for b in self.batches + ((self.train_batch,) if self.train_batch else ())):
            raise ConfigError(f"--batch: at most {MAX_BATCH} images per forward pass, got "
                              f"{max(self.batches + ((self.train_batch,) if self.train_batch else ()))}")
        for key in ("warmup", "train_rounds", "rounds", "train_batch", "threads"):
            value = getattr(self, key)
            minimum = 0 if key == "warmup" else 1
            if value is not None and value < minimum:
                raise ConfigError(f"--{key.replace('_', '-')}: expected an integer >= {minimum}, got {value}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ConfigError(f"--peak-tflops: expected a positive number, got {self.peak_tflops}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads`` for the run. On a shared machine, fewer threads than cores keeps timings
    stable: a parallel region waits for its slowest thread, and a descheduled one stalls every op."""
    if threads is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def attention_backend(backend: str | None) -> Iterator[None]:
    """Set ``NATGAN_NA_BACKEND`` (read by the NA op at call time) for the duration of the run."""
    if backend is None:
        yield
        return
    saved = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = backend
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = saved


@contextlib.contextmanager
def compile_scope(enabled: bool) -> Iterator[dict[str, Any]]:
    """Fresh dynamo state for one model, recompile limits raised, graph breaks counted.

    Generators call the same block ``forward`` code once per block instance; after a graph break
    (e.g. inside an attention op) each instance is a separate recompilation, and dynamo's default
    limit of 8 would silently leave the later blocks eager — timings would then not be of a compiled
    model. The number of graph breaks is reported so a user sees how much of the model compiled.
    """
    stats: dict[str, Any] = {}
    if not enabled:
        yield stats
        return
    import torch._dynamo as dynamo

    dynamo.reset()
    limits = {"recompile_limit": 256, "accumulated_recompile_limit": 4096}
    if not hasattr(dynamo.config, "recompile_limit"):  # older torch spelling
        limits["cache_size_limit"] = 256
    saved = {k: getattr(dynamo.config, k) for k in limits if hasattr(dynamo.config, k)}
    for key, value in saved.items():
        setattr(dynamo.config, key, max(value, limits[key]))
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - private API moved
        counters = None
    if counters is not None:
        counters.clear()
    try:
        yield stats
    finally:
        if counters is not None:
            stats["graph_breaks"] = int(sum(counters["graph_break"].values()))
        for key, value in saved.items():
            setattr(dynamo.config, key, value)
        dynamo.reset()


def _device_scope(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


LABEL_SEED_SALT = 0x5EED_C1A5  # the label stream is its own, so a conditional model's z equals the unconditional one's


def bench_inputs(G: nn.Module, batch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(z, c)`` for one call of ``G``: z from ``seed`` (as before labels existed), and for a class-conditional
    ``G`` labels of uniformly random classes from a stream of their own (``seed`` salted), else None.

    Why uniform: a benchmark has no dataset, and the cost of a conditional forward does not depend on which
    classes are asked for (the label embedding is one small matrix product per image)."""
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    k = num_classes_of(G)
    if not k:
        return z, None
    c = torch.randint(k, (batch,), generator=torch.Generator().manual_seed(seed ^ LABEL_SEED_SALT))
    return z, c.to(device)


def labels_protocol(num_classes: int, seed: int) -> str | None:
    """How a conditional model's labels were chosen, in words (None for an unconditional model)."""
    if not num_classes:
        return None
    return (f"class-conditional ({num_classes} classes): uniform random class labels for G and D, drawn from seed "
            f"{seed}")


def _compiled(module: nn.Module, mode: str | None) -> Callable:
    if mode is None:
        return module
    return torch.compile(module, mode=None if mode == "default" else mode)


def _counts(settings: BenchSettings, device: torch.device) -> tuple[int, int]:
    cuda = device.type == "cuda"
    defaults = OFFICIAL if cuda else CPU_DEFAULTS
    warmup = settings.warmup if settings.warmup is not None else defaults["warmup"]
    rounds = settings.rounds if settings.rounds is not None else defaults["rounds"]
    return warmup, rounds


def _run_guarded(what: str, fn: Callable[[], Any]) -> Any:
    """Turn out-of-memory and backend failures into one-line errors naming what was being measured."""
    try:
        return fn()
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise NatGanError(f"{what}: out of device memory (try a smaller --batch)") from None
    except (NotImplementedError, ValueError) as exc:  # e.g. an attention backend that cannot run this case
        raise NatGanError(f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def measure_generator(G: nn.Module, settings: BenchSettings | None = None, *, device: torch.device | None = None,
                      label: str = "generator") -> dict[str, Any]:
    """Throughput (img/s), time per call, peak memory and FLOPs per image of ``G(z)`` at each batch size."""
    settings = settings or BenchSettings()
    settings.validate()
    device = device or resolve_device(settings.device)
    warmup, rounds = _counts(settings, device)
    G = G.to(device).eval()
    result: dict[str, Any] = {"warmup": warmup, "rounds": rounds, "throughput": []}
    labels = labels_protocol(num_classes_of(G), settings.seed)
    if labels:
        result["labels"] = labels
    with _device_scope(device), attention_backend(settings.attn_backend), \
            precision_context(settings.precision, device) as autocast:
        if settings.flops:
            z1, c1 = bench_inputs(G, 1, device, settings.seed)

            def one() -> None:
                with autocast():
                    G(z1) if c1 is None else G(z1, c1)

            report = _run_guarded(f"{label}: counting FLOPs", lambda: count_flops(one, [G]))
            result["gflops_per_img"] = round(report.total / 1e9, 3)
            result["flops_counted_g"] = round(report.counted / 1e9, 3)
            result["flops_na_analytic_g"] = round(report.analytic / 1e9, 3)
            result["flops_method"] = report.method
        forward = _compiled(G, settings.compile)
        for batch in settings.batches:
            z, c = bench_inputs(G, batch, device, settings.seed)

            def call() -> None:
                with torch.inference_mode(), autocast():
                    forward(z) if c is None else forward(z, c)  # noqa: B023 (called within this iteration only)

            def timed():
                with PeakMemory(device) as mem:
                    timing = time_calls(call, warmup=warmup, rounds=rounds, device=device)
                return timing, mem.report

            timing, mem = _run_guarded(f"{label} at batch {batch}", timed)
            row = {
                "batch": batch,
                "img_per_s": round(timing.per_second(batch), 3),
                "ms_per_call": round(timing.mean * 1e3, 3),
                "ms_per_call_std": round(timing.std * 1e3, 3),
                "first_call_s": None if timing.first_call_s is None else round(timing.first_call_s, 3),
                "peak_memory_mb": _mb(mem.peak_bytes),
                "added_memory_mb": _mb(mem.delta_bytes),
            }
            if "gflops_per_img" in result:
                achieved = result["gflops_per_img"] * timing.per_second(batch) / 1e3
                row["achieved_tflops"] = round(achieved, 4)
                if settings.peak_tflops:
                    row["fraction_of_peak"] = round(achieved / settings.peak_tflops, 4)
            result["throughput"].append(row)
            result["memory_method"] = mem.method
    return result


def train_step_fn(G: nn.Module, D: nn.Module, batch: int, device: torch.device,
                  autocast: Callable[[], contextlib.AbstractContextManager], *, compile_mode: str | None = None,
                  seed: int = 0, lr: float = 2e-4) -> Callable[[], None]:
    """One full GAN step: D on real + detached fake, then G through D; both with backward and Adam.

    Non-saturating logistic loss (every model family here uses it); lazy regularisers (R1, path
    length) and bCR are left out, so this is the cost of the plain step that dominates training.
    D sees fakes and reals as one concatenated batch: the same work as two calls, and a compiled
    spectral-norm D cannot be called twice before backward (each call updates its power-iteration
    vectors in place, invalidating what the first call saved). A class-conditional pair gets labels as in
    training: the fakes' labels go into G and, with the reals' own labels, into D (:func:`bench_inputs`).
    """
    G.train().to(device)
    D.train().to(device)
    g_opt = torch.optim.Adam([p for p in G.parameters()], lr=lr / 4, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam([p for p in D.parameters()], lr=lr, betas=(0.0, 0.99))
    g_fn, d_fn = _compiled(G, compile_mode), _compiled(D, compile_mode)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.z_dim, generator=gen).to(device)
    real = torch.randn(batch, 3, G.resolution, G.resolution, generator=gen).to(device)
    _, c_fake = bench_inputs(G, batch, device, seed)
    _, c_real = bench_inputs(G, batch, device, seed + 1)
    conditional = c_fake is not None
    c_both = torch.cat([c_fake, c_real]) if conditional else None

    def generate(z: torch.Tensor) -> torch.Tensor:
        return g_fn(z, c_fake) if conditional else g_fn(z)

    def discriminate(images: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return d_fn(images, c) if conditional else d_fn(images)

    def step() -> None:
        set_requires_grad(G, False)
        set_requires_grad(D, True)
        with autocast():
            with torch.no_grad():
                fake = generate(z)
            logits = discriminate(torch.cat([fake, real]), c_both)
            d_loss = F.softplus(logits[:batch]).mean() + F.softplus(-logits[batch:]).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        set_requires_grad(G, True)
        set_requires_grad(D, False)
        with autocast():
            g_loss = F.softplus(-discriminate(generate(z), c_fake)).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()

    return step


def measure_train_step(G: nn.Module, D: nn.Module, settings: BenchSettings | None = None, *,
                       device: torch.device | None = None, label: str = "model") -> dict[str, Any]:
    """Seconds per full G+D training step at ``settings.train_batch`` and the resulting images/s."""
    settings = settings or BenchSettings(train=True)
    settings.validate()
    device = device or resolve_device(settings.device)
    warmup, rounds = _counts(settings, device)
    batch = settings.train_batch or max(settings.batches)
    rounds = settings.train_rounds or min(rounds, TRAIN_ROUNDS_CAP)
    warmup = max(1, min(warmup, 10))  # at least one step: optimizer state and allocator settle
    with _device_scope(device), attention_backend(settings.attn_backend), \
            precision_context(settings.precision, device) as autocast:
        step = train_step_fn(G, D, batch, device, autocast, compile_mode=settings.compile, seed=settings.seed)

        def timed():
            with PeakMemory(device) as mem:
                timing = time_calls(step, warmup=warmup, rounds=rounds, device=device)
            return timing, mem.report

        timing, mem = _run_guarded(f"{label}: training step at batch {batch}", timed)
    labels = labels_protocol(num_classes_of(G), settings.seed)
    return {
        **({"labels": labels} if labels else {}),
        "batch": batch,
        "warmup": warmup,
        "rounds": rounds,
        "step_ms": round(timing.mean * 1e3, 3),
        "step_ms_std": round(timing.std * 1e3, 3),
        "img_per_s": round(timing.per_second(batch), 3),
        "peak_memory_mb": _mb(mem.peak_bytes),
        "added_memory_mb": _mb(mem.delta_bytes),
        "memory_method": mem.method,
        "loss": "non-saturating logistic, G and D steps with backward + Adam; no R1/path-length/bCR",
    }


def machine(device: torch.device) -> dict[str, Any]:
    """Where the numbers were taken, for the JSON and the table caption."""
    info = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def is_paper_config(name: str, config: Any) -> bool:
    """Whether ``config`` is the registered (paper) configuration of model ``name``, so the paper's parameter
    count and speed may stand beside the measurement; a recipe or ``--set`` that changes the model is not."""
    import dataclasses

    from natgan.model_choice import resolve_config

    return dataclasses.asdict(resolve_config(name)[1]) == dataclasses.asdict(config)


def benchmark_model(name: str | None, settings: BenchSettings | None = None, *, recipe: str | None = None,
                    sets: list[str] | None = None, resolution: int | None = None,
                    device: torch.device | None = None) -> dict[str, Any]:
    """Build one registered model (defaults, recipe, overrides) and measure it; one JSON-ready dict."""
    from natgan.model_choice import resolve_model
    from natgan.models import count_params, get_spec

    settings = settings or BenchSettings()
    settings.validate()
    device = device or resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    pair = resolve_model(name, recipe=recipe, sets=sets, resolution=resolution)
    spec = get_spec(pair.name)
    paper = is_paper_config(pair.name, pair.config)
    warmup, rounds = _counts(settings, device)
    official = (device.type == "cuda" and settings.batches[0] == OFFICIAL["batch"]
                and (warmup, rounds) == (OFFICIAL["warmup"], OFFICIAL["rounds"]))
    row: dict[str, Any] = {
        "model": pair.name,
        "resolution": pair.config.resolution,
        "g_params": count_params(pair.generator),
        "d_params": count_params(pair.discriminator),
        "paper_g_params_m": spec.paper_params_g if paper else None,  # the paper's figures describe its config only
        "paper_img_per_s": spec.paper_img_per_s if paper and pair.config.resolution == 256 else None,
        "precision": settings.precision,
        "compile": settings.compile,
        "attn_backend": settings.attn_backend or os.environ.get(BACKEND_ENV) or "auto",
        "protocol": "official (batch 1, 10 warm-up, 500 rounds, CUDA events)" if official else
                    f"reduced ({warmup} warm-up, {rounds} rounds, "
                    f"{'CUDA events' if device.type == 'cuda' else 'perf_counter'})",
    }
    with compile_scope(settings.compile is not None) as compile_stats:
        row.update(measure_generator(pair.generator, settings, device=device, label=pair.name))
        if settings.train:
            row["train"] = measure_train_step(pair.generator, pair.discriminator, settings, device=device,
                                              label=pair.name)
    if "graph_breaks" in compile_stats:
        row["compile_graph_breaks"] = compile_stats["graph_breaks"]
    del pair
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def benchmark(models: list[str], settings: BenchSettings | None = None, *, recipe: str | None = None,
              sets: list[str] | None = None, resolution: int | None = None,
              on_start: Callable[[str, int, int], None] | None = None,
              on_result: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Measure several models with the same settings on the same machine: ``{"machine", "settings", "results",
    "failures"}``.

    Every name is checked before anything is measured, so a typo in the fourth model does not cost the first
    three measurements. With several models, one whose configuration is refused (e.g. at ``--resolution``) or
    whose measurement fails (out of memory, a backend error) is reported in ``failures`` (``{"model", "stage",
    "error"}``) and the others are still measured; a single model's failure raises as it is.
    """
    from natgan.model_choice import resolve_config
    from natgan.models import get_spec

    settings = settings or BenchSettings()
    settings.validate()
    device = resolve_device(settings.device)
    if not models and recipe is None:
        raise ConfigError("give --model/--models NAME[,NAME...] or --recipe FILE (see `nat-gan bench --list`)")
    names: list[str | None] = [get_spec(m).name for m in models] or [None]
    if recipe is not None and len(names) > 1:
        raise ConfigError("--recipe describes one model; compare several with --models and --set/--resolution")
    failures: list[dict[str, str]] = []
    measurable: list[str | None] = []
    for n in names:  # validate every config up front (cheap compared to any measurement)
        try:
            resolve_config(n, recipe=recipe, sets=sets, resolution=resolution)
        except ConfigError as exc:
            if len(names) == 1:
                raise
            failures.append({"model": str(n), "stage": "configuration", "error": str(exc)})
            continue
        measurable.append(n)
    if settings.attn_backend is not None:
        from natgan.ops import available_backends

        if settings.attn_backend not in available_backends():
            raise ConfigError(f"--attn-backend {settings.attn_backend}: not available here "
                              f"(available: {', '.join(available_backends())})")
    results = []
    with cpu_threads(settings.threads):
        for i, n in enumerate(measurable):
            if on_start is not None:
                on_start(n or str(recipe), i, len(measurable))
            try:
                row = benchmark_model(n, settings, recipe=recipe, sets=sets, resolution=resolution, device=device)
            except (NatGanError, RuntimeError) as exc:  # RuntimeError: out of memory, a kernel or backend failure
                if len(names) == 1:
                    raise
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                failures.append({"model": str(n), "stage": "measurement", "error": first})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            results.append(row)
            if on_result is not None:
                on_result(row)
        info = machine(device)
    return {"machine": info, "settings": _settings_dict(settings, device), "results": results,
            "failures": failures}


def _settings_dict(settings: BenchSettings, device: torch.device) -> dict[str, Any]:
    warmup, rounds = _counts(settings, device)
    return {"batches": list(settings.batches), "warmup": warmup, "rounds": rounds,
            "precision": settings.precision, "compile": settings.compile, "attn_backend": settings.attn_backend,
            "train": settings.train, "peak_tflops": settings.peak_tflops, "threads": settings.threads,
            "seed": settings.seed}
