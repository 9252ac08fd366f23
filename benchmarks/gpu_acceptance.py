"""GPU acceptance in one command: every GPU goal and correctness check, time-boxed, reported as it goes.

    python benchmarks/gpu_acceptance.py --budget 540 --out DIR         # on a GPU node (what .ci/gpu runs)
    python benchmarks/gpu_acceptance.py --device cpu --smoke --out DIR  # every section on tiny sizes (CI)
    python benchmarks/gpu_acceptance.py --list                          # sections, caps and goals

Sections run in priority order, each under its own cap (clamped to what is left of ``--budget``; a smoke run
has no caps and no budget: it checks that every section runs, and a busy CI machine must not fail it); a
failing section is recorded and the next one runs; ``DIR/acceptance.json`` and ``DIR/acceptance.md``
are rewritten after every section, so a run cut off at its limit still reports what it did (see
:mod:`natgan.bench.acceptance`). Every figure is printed next to its goal with pass/fail.

To add a measurement, write ``def my_section(ctx)`` that calls ``ctx.record(...)``/``ctx.check(...)``
and add one ``Section(...)`` entry to ``SECTIONS`` at its priority. Runs from the source tree: nothing
needs installing but the packages (``.ci/gpu`` carries the missing ones as wheels).

``--smoke`` shrinks every model and problem (tiny configs, 1-2 timed rounds, no compilation) so that
the whole script runs on a CPU in seconds; its figures are judged against the same GPU goals (and fail
them: CPU numbers), but only section errors make a smoke run fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import subprocess
import sys
import time
import warnings
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):  # the source tree, not an installed copy; and the sibling benchmarks
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

from natgan.bench.acceptance import Section, SectionContext, run_sections  # noqa: E402

# ------------------------------------------------------------------------------------------ goals

GOALS = {
    "stylenat_b1_tf32_img_s": 100.0,    # 3x the paper's 32.56 img/s (official protocol: batch 1, TF32)
    "stylenat_b32_bf16_img_s": 950.0,   # H100-class GPU
    "train_img_s_per_gpu": 60.0,        # real loop, ffhq256 recipe, R1 + bCR on
    "fid_speedup": 5.0,                 # vs the official write-PNGs-at-batch-4-then-score path
    "fid_agreement_rel": 1e-2,          # |ours - official| / official
    "na_fp32_err": 2e-3,                # max |backend - float64 CPU| / max(1, |reference|), as tests/test_na_gpu.py
    "na_bf16_err": 5e-2,
    "ada_overhead_pct": 15.0,           # ADA bgc vs no augmentation, training img/s (issue 13)
}
OFFICIAL_ROUNDS, OFFICIAL_WARMUP = 500, 10
CPU_EAGER_MAX_SIZE = 32   # largest map eager (CPU) flex/natten are run on
PYTEST_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")

# Tiny configurations for --smoke: the same code paths at sizes a 2-core CPU runs in seconds.
TINY = {
    "stylenat": dict(style_dim=32, n_mlp=2, channels=[32, 32, 32, 32], min_heads=2, kernel_size=3,
                     d_channels=[16] * 4),
    "styleswin": dict(style_dim=32, n_mlp=2, channels=[32, 32, 32, 32], min_heads=4, d_channels=[16] * 4),
    "hit-b": dict(low_res_stages=2, widths=[32, 32, 16], heads=[4, 2, 2], depths=[1, 1, 2], block_sizes=[4, 4],
                  z_dim=16, d_channel_multiplier=1, d_max_channels=16),
    "stylegan2": dict(style_dim=16, n_mlp=2, channel_max=16),
    "ganformer": dict(components=4, latent_dim=8, channel_max=16, attn_max_res=8, mapping_layers=4),
}
SMOKE_RES = {256: 32, 1024: 64}
PAPER_RECIPES = {("stylenat", 256): "ffhq256.toml", ("stylenat", 1024): "ffhq1024.toml"}


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def model_config(name: str, res: int, ctx: SectionContext):
    """The validated config of ``name`` at paper resolution ``res``: the paper model on a GPU; in smoke mode
    a tiny one at 32 (for 256) or 64 (for 1024) px."""
    from natgan.models import get_spec

    if not ctx.smoke:
        recipe = PAPER_RECIPES.get((name, res))
        if recipe is not None:  # the released models' configurations
            from natgan import recipe as recipes

            return recipes.load(ROOT / "recipes" / recipe).model
        return get_spec(name).make_config({"resolution": res})
    cfg = dict(TINY[name], resolution=SMOKE_RES[res])
    if name == "stylenat" and res == 1024:
        cfg.update(channels=[32] * 5, d_channels=[16] * 5)
    return get_spec(name).make_config(cfg)


def build_generator(name: str, res: int, ctx: SectionContext, config=None) -> torch.nn.Module:
    from natgan.models import create

    return create(name, config=config or model_config(name, res, ctx)).generator


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _mb(n) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# ------------------------------------------------------------------------------------------ doctor

def doctor_section(ctx: SectionContext) -> None:
    """`nat-gan doctor` on this machine: needed checks pass/fail, the rest for information."""
    from natgan.doctor import FAIL, run_checks

    rows = run_checks(device="cpu" if ctx.device.type == "cpu" else "auto", run_dir=ctx.workdir / "runs")
    for r in rows:
        label = f"{r.group}: {r.name}"
        if r.required or r.status == FAIL:
            ctx.check(label, r.status != FAIL, f"{r.detail}{'; fix: ' + r.fix if r.fix and r.status == FAIL else ''}")
        else:
            ctx.record(label, f"{r.status}: {r.detail}", note=r.fix)


# ------------------------------------------------------------------------------------------ pytest -m gpu

def gpu_tests_section(ctx: SectionContext) -> None:
    """The repository's GPU tests (``pytest -m gpu``) in a child process that ends before the cap.

    Results are read from pytest's verbose lines, so a run killed at the cap still reports every test it
    finished (and names the failed ones); the whole log is kept next to the report as pytest-gpu.log.
    """
    targets = ["tests/test_na_gpu.py"] if ctx.smoke else ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-v", "-m", "gpu", "-p", "no:cacheprovider",
           "-o", "console_output_style=classic",
           *targets]
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = False
    try:
        out, _ = proc.communicate(timeout=ctx.child_timeout())
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        killed = True
    finally:
        if proc.poll() is None:  # the section's own alarm fired while waiting: leave no child behind
            proc.kill()
            proc.wait()
    (ctx.out_dir or ctx.workdir).joinpath("pytest-gpu.log").write_text(out)  # comes back with the report
    outcomes = {}
    for line in out.splitlines():
        match = PYTEST_LINE.match(line)
        if match:
            outcomes[match.group(1)] = match.group(2)
    failed = [t for t, o in outcomes.items() if o in ("FAILED", "ERROR")]
    ctx.record("GPU tests passed", sum(o in ("PASSED", "XFAIL") for o in outcomes.values()))
    ctx.record("GPU tests skipped", sum(o == "SKIPPED" for o in outcomes.values()),
               note="all of them without CUDA" if ctx.device.type == "cpu" else "")
    ctx.record("GPU tests failed", len(failed), at_most=0,
               note=", ".join(t.split("::", 1)[-1] for t in failed[:6]) + (" ..." if len(failed) > 6 else ""))
    ctx.check("pytest -m gpu finished", not killed and bool(outcomes),
              f"killed at the cap after {len(outcomes)} tests" if killed
              else f"exit {proc.returncode}: {_last_line(out)}")


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


# ------------------------------------------------------------------------------------------ NA op

@dataclass(frozen=True)
class Geometry:
    model: str
    size: int
    kernel: int
    dilation: int
    heads: int
    head_dim: int

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self.size, self.kernel, self.dilation, self.heads, self.head_dim

    @property
    def label(self) -> str:
        return f"{self.model} {self.size}² k{self.kernel} d{self.dilation} h{self.heads}x{self.head_dim}"


def stylenat_geometries(ctx: SectionContext, res: int) -> list[Geometry]:
    """Every (map size, kernel, dilation, heads, head_dim) of a StyleNAT generator's Hydra partitions."""
    from natgan.models.transformer_gan import level_resolutions

    cfg = model_config("stylenat", res, ctx)
    tag = f"StyleNAT-{res}"
    out: list[Geometry] = []
    for level, size in enumerate(level_resolutions(cfg.resolution)):
        if level == 0:
            continue  # 4x4: full self-attention, no NA
        channels = cfg.level_channels()[level]
        heads = cfg.level_heads(channels)
        for p in cfg.partitions(level, heads):
            g = Geometry(tag, size, p.kernel, p.dilation, p.heads, channels // heads)
            if g not in out:
                out.append(g)
    return out


def _na_inputs(g: Geometry, batch: int, rpb: bool):
    gen = torch.Generator().manual_seed(g.size * 131 + g.kernel * 17 + g.dilation)
    shape = (batch, g.size, g.size, g.heads, g.head_dim)
    q, k, v, grad_out = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4))
    tensors = [q, k, v]
    if rpb:
        tensors.append(0.5 * torch.randn(g.heads, 2 * g.kernel - 1, 2 * g.kernel - 1, generator=gen,
                                         dtype=torch.float64))
    return tensors, grad_out


def _na_call(tensors, grad_out, g: Geometry, backend: str, device, dtype, backward: bool):
    from natgan.ops import neighborhood_attention

    leaves = [t.detach().to(device=device, dtype=dtype).requires_grad_(backward) for t in tensors]
    rpb = leaves[3] if len(leaves) > 3 else None
    with torch.set_grad_enabled(backward):
        out = neighborhood_attention(*leaves[:3], g.kernel, g.dilation, rpb=rpb, backend=backend)
        if not backward:
            return [out.detach()]
        grads = torch.autograd.grad(out, leaves, grad_out.to(device=device, dtype=dtype))
    return [t.detach() for t in (out, *grads)]


def _max_rel_error(got, ref) -> float:
    worst = 0.0
    for a, b in zip(got, ref):
        a = a.double().cpu()
        if not torch.isfinite(a).all():
            return float("inf")
        worst = max(worst, ((a - b).abs().max() / max(1.0, b.abs().max().item())).item())
    return worst


def _timed_na(ctx, tensors, grad_out, g, backend, dtype, backward: bool, rounds: int) -> tuple[float, int | None]:
    from natgan.bench.memory import PeakMemory
    from natgan.bench.timing import time_calls

    leaves = [t.to(device=ctx.device, dtype=dtype) for t in tensors]
    grad = grad_out.to(device=ctx.device, dtype=dtype)

    def call():
        _na_call(leaves, grad, g, backend, ctx.device, dtype, backward)

    with PeakMemory(ctx.device) as mem:
        timing = time_calls(call, warmup=1 if ctx.device.type == "cuda" else 0, rounds=rounds, device=ctx.device)
    return timing.mean * 1e3, mem.report.peak_bytes


def na_op_section(ctx: SectionContext) -> None:
    """NA op at every StyleNAT-256/-1024 geometry: flex, torch (and natten) vs the float64 CPU op; time and memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex's eager-mode and deprecation notices, once per geometry
        _na_op(ctx)


def _na_op(ctx: SectionContext) -> None:
    from natgan.ops import available_backends
    from natgan.ops.dispatch import flex_friendly

    cuda = ctx.device.type == "cuda"
    geometries: list[Geometry] = []
    for g in stylenat_geometries(ctx, 256) + stylenat_geometries(ctx, 1024):
        twin = next((i for i, h in enumerate(geometries) if h.shape == g.shape), None)
        if twin is None:
            geometries.append(g)
        else:  # the same problem in both models (e.g. the 8..64 levels): measured once, named for both
            geometries[twin] = Geometry(f"{geometries[twin].model}/{g.model.split('-')[1]}", *g.shape)
    # largest maps first: they dominate generator time and memory, and a capped run should have measured them
    geometries.sort(key=lambda g: -g.size)
    backends = [b for b in ("flex", "torch", "natten") if b in available_backends()]
    timing_dtype = torch.bfloat16 if cuda else torch.float32
    rounds = 10 if cuda else 1
    done = 0
    for g in geometries:
        if not ctx.time_left_for(8 if cuda else 1):
            ctx.note(f"not reached (time): {g.label} and {len(geometries) - done - 1} more")
            break
        batch = 1 if g.size > 256 or ctx.smoke else 2
        tensors, grad_out = _na_inputs(g, batch, rpb=True)
        refs = {True: _na_call(tensors, grad_out, g, "torch", "cpu", torch.float64, True)}
        for backend in backends:
            if not cuda and backend != "torch" and g.size > CPU_EAGER_MAX_SIZE:
                continue  # eager flex (natten's CPU path too) materialises N x N scores: seconds per call
            if backend == "flex" and not flex_friendly(g.head_dim):
                ctx.note(f"{g.label}: flex not run (head_dim {g.head_dim}: the automatic choice uses torch there)")
                continue
            rpb = backend != "natten"          # natten >= 0.20 has no positional bias: compared without it
            backward = cuda or backend == "torch"  # flex and natten are forward-only on CPU
            inputs = tensors if rpb else tensors[:3]
            if not rpb and False not in refs:
                refs[False] = _na_call(inputs, grad_out, g, "torch", "cpu", torch.float64, True)
            ref = refs[rpb] if backward else refs[rpb][:1]
            what = "fwd+grads" if backward else "fwd"
            dtypes = ((torch.float32, GOALS["na_fp32_err"]), (torch.bfloat16, GOALS["na_bf16_err"]))
            for dtype, tol in dtypes if cuda or backend == "torch" else dtypes[:1]:
                name = f"{g.label} {backend} {str(dtype).split('.')[1]} {what} err"
                try:
                    start = time.perf_counter()
                    got = _na_call(inputs, grad_out, g, backend, ctx.device, dtype, backward)
                    _sync(ctx.device)
                    first = time.perf_counter() - start
                    ctx.record(name, _max_rel_error(got, ref), at_most=tol)
                    if backend == "flex" and cuda:
                        ctx.record(f"{g.label} flex {str(dtype).split('.')[1]} compile (first call)", first, "s")
                except Exception as exc:  # noqa: BLE001 - one geometry/backend failing is a failed figure
                    ctx.record(name, None, at_most=tol, note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            if not cuda and backend != "torch":
                continue  # eager CPU flex/natten are correctness references, not a path worth timing
            try:
                for bwd in (False, True) if backward else (False,):
                    ms, peak = _timed_na(ctx, inputs, grad_out, g, backend, timing_dtype, bwd, rounds)
                    ctx.record(f"{g.label} {backend} {'fwd+bwd' if bwd else 'fwd'} time (batch {batch}, "
                               f"{str(timing_dtype).split('.')[1]})", ms, "ms", note=f"peak {_mb(peak)} MB")
            except Exception as exc:  # noqa: BLE001
                ctx.note(f"{g.label} {backend} timing: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        done += 1
    if not cuda:
        ctx.note(f"CPU: flex and natten run eagerly (forward only, N x N scores), so only in fp32, untimed, on "
                 f"maps up to {CPU_EAGER_MAX_SIZE}²; the torch backend on every geometry")
    ctx.record("geometries measured", done, at_least=len(geometries),
               note=f"{len(geometries)} geometries of StyleNAT-256 and -1024; backends {', '.join(backends)}")


# ------------------------------------------------------------------------------------------ generators

def _measure(G, ctx, *, batch: int, precision: str, compile_mode: str | None = None, rounds: int,
             warmup: int, flops: bool = False) -> dict:
    from natgan.bench.measure import BenchSettings, compile_scope, measure_generator

    settings = BenchSettings(batches=(batch,), warmup=warmup, rounds=rounds, precision=precision,
                             compile=compile_mode, flops=flops)
    with compile_scope(compile_mode is not None) as stats:
        row = measure_generator(G, settings, device=ctx.device)
    out = dict(row["throughput"][0])
    out["graph_breaks"] = stats.get("graph_breaks")
    return out


def _rounds_for(ctx, G, batch: int, precision: str, share_s: float) -> tuple[int, int, float | None]:
    """The official 10 warm-up calls (plus 3 probe rounds), then as many rounds (up to the official 500) as
    ``share_s`` seconds allow: ``(further warm-up, rounds, first-call seconds)``."""
    if ctx.smoke:
        return 1, 1, None
    probe = _measure(G, ctx, batch=batch, precision=precision, rounds=3, warmup=OFFICIAL_WARMUP)
    per_call = probe["ms_per_call"] / 1e3
    return 0, int(max(10, min(OFFICIAL_ROUNDS, share_s / max(per_call, 1e-6)))), probe["first_call_s"]


def generators_section(ctx: SectionContext) -> None:
    """Generator img/s: official protocol (batch 1, TF32, CUDA events) and batch 32 bf16, eager and compiled.

    Every model eager first, then the compiled StyleNAT-256 rows (compilation is the slow and risky part);
    the headline "best" figures are recorded even when the cap interrupts a compilation.
    """
    cuda = ctx.device.type == "cuda"
    big = 32 if cuda else 2
    plan = [("stylenat", 256), ("styleswin", 256), ("hit-b", 256), ("stylegan2", 256), ("ganformer", 256),
            ("stylenat", 1024)]
    best: dict[str, list[float]] = {"b1": [], "b32": []}
    try:
        headline = None
        for i, (name, res) in enumerate(plan):
            if not ctx.time_left_for(15 if cuda else 1):
                ctx.note(f"not reached (time): {', '.join(f'{n}-{r}' for n, r in plan[i:])}")
                break
            G = build_generator(name, res, ctx)
            _eager_rows(ctx, G, name, res, big, best, share=ctx.remaining() / (3 * (len(plan) - i) + 4))
            if (name, res) == ("stylenat", 256):
                headline = G
            else:
                del G
            _free(ctx.device)
        if headline is not None and cuda:
            _compiled_rows(ctx, headline, "stylenat-256", best)
        elif headline is not None:
            ctx.note("torch.compile and CUDA graphs: measured on CUDA only (skipped in a CPU run)")
    finally:
        if best["b1"]:
            ctx.record("StyleNAT-256 batch 1 TF32, best", max(best["b1"]), "img/s",
                       at_least=GOALS["stylenat_b1_tf32_img_s"], note="3x the paper's 32.56 img/s")
        if best["b32"]:
            ctx.record(f"StyleNAT-256 batch {big} {'bf16' if cuda else 'fp32'}, best", max(best["b32"]), "img/s",
                       at_least=GOALS["stylenat_b32_bf16_img_s"], note="H100-class goal")


def _eager_rows(ctx, G, name: str, res: int, big: int, best: dict, share: float) -> None:
    """Batch 1 TF32 with the official protocol (rounds scaled to ``share`` seconds), then a big bf16 batch."""
    from natgan.models.registry import get_spec

    cuda = ctx.device.type == "cuda"
    label = f"{name}-{res}"
    headline = (name, res) == ("stylenat", 256)
    share = max(2.0, share)
    warmup, rounds, first = _rounds_for(ctx, G, 1, "tf32", share)
    row = _measure(G, ctx, batch=1, precision="tf32", rounds=rounds, warmup=warmup, flops=cuda)
    protocol = f"{OFFICIAL_WARMUP if cuda else warmup} warm-up, {rounds} timed rounds" + (
        " (official 500, scaled to the budget)" if cuda and rounds < OFFICIAL_ROUNDS else "")
    paper = get_spec(name).paper_img_per_s if res == 256 and not ctx.smoke else None
    first_call = first if first is not None else row["first_call_s"]
    ctx.record(f"{label} batch 1 TF32 eager", row["img_per_s"], "img/s",
               at_least=GOALS["stylenat_b1_tf32_img_s"] if headline else None,
               note=f"{protocol}; first call {first_call} s; peak {row['peak_memory_mb']} MB"
                    + (f"; {row['achieved_tflops']} TFLOP/s" if row.get("achieved_tflops") else "")
                    + (f"; paper {paper} img/s" if paper else ""))
    if headline:
        best["b1"].append(row["img_per_s"])
    batch = 8 if res == 1024 and cuda else big
    per_call = row["ms_per_call"] / 1e3 * batch  # rough: batch-1 time x batch, an upper bound
    warmup, rounds = (3, max(5, min(50, int(share / max(per_call, 1e-3))))) if cuda else (1, 1)
    precision = "bf16" if cuda else "fp32"   # bf16 autocast on a CPU is 10x slower: not what is measured
    row = _measure(G, ctx, batch=batch, precision=precision, rounds=rounds, warmup=warmup)
    ctx.record(f"{label} batch {batch} {precision} eager", row["img_per_s"], "img/s",
               note=f"{warmup} warm-up, {rounds} rounds; first call {row['first_call_s']} s; "
                    f"peak {row['peak_memory_mb']} MB")
    if headline:
        best["b32"].append(row["img_per_s"])


def _compiled_rows(ctx, G, label: str, best: dict) -> None:
    """torch.compile at batch 32 bf16, and CUDA graphs (mode reduce-overhead) at batch 1 TF32."""
    for mode, batch, precision, key in (("default", 32, "bf16", "b32"), ("reduce-overhead", 1, "tf32", "b1")):
        if not ctx.time_left_for(60):
            ctx.note(f"{label} compiled {mode}: not reached (time)")
            continue
        try:
            row = _measure(G, ctx, batch=batch, precision=precision, compile_mode=mode,
                           rounds=50 if batch == 32 else 200, warmup=3)
        except Exception as exc:  # noqa: BLE001 - a compile failure is a finding, not the end of the section
            ctx.record(f"{label} batch {batch} {precision} compiled ({mode})", None, "img/s",
                       note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            continue
        ctx.record(f"{label} batch {batch} {precision} compiled ({mode})", row["img_per_s"], "img/s",
                   note=f"compile + first call {row['first_call_s']} s; graph breaks {row['graph_breaks']}; "
                        f"peak {row['peak_memory_mb']} MB")
        best[key].append(row["img_per_s"])


def _free(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ training

def training_section(ctx: SectionContext) -> None:
    """The real training loop (ffhq256 recipe, R1 + bCR) at the per-GPU batch in tf32 and bf16; 1024 checkpointing."""
    from bench_train import measure_training

    from natgan import recipe as recipes

    cuda = ctx.device.type == "cuda"
    recipe_path = ROOT / "recipes" / ("ffhq256.toml" if cuda else "demo.toml")
    recipe = recipes.load(recipe_path)
    per_gpu = recipe.train.batch_per_gpu or recipe.train.batch
    if not cuda:  # the demo recipe, small, with bCR switched on so the same loss terms run
        per_gpu = 4
    sets = [f"train.batch={per_gpu}", f"train.batch_per_gpu={per_gpu}", "train.bcr=true",
            f"train.device={'cuda' if cuda else 'cpu'}"] + ([] if cuda else ["data.workers=0"])
    warmup, steps = (4, 32) if cuda else (1, 1)   # 32 steps cover two lazy-R1 steps (every 16)
    for precision in ("tf32", "bf16"):
        if not ctx.time_left_for(30 if cuda else 2):
            ctx.note(f"training {precision}: not reached (time)")
            continue
        report = measure_training(recipe_path, steps=steps, warmup=warmup, sets=sets + [f"train.precision={precision}"],
                                  workdir=ctx.workdir)
        ctx.record(f"{report['model']}-{report['resolution']} training, batch {report['batch']} per GPU, {precision}",
                   report["img_per_s"], "img/s", at_least=GOALS["train_img_s_per_gpu"],
                   note=f"R1 every {report['r1_every']}, bCR {report['bcr']}; {steps} steps after {warmup}; "
                        f"peak {report['peak_memory_mb']} MB")
        _free(ctx.device)
    if ctx.time_left_for(20 if cuda else 1):
        _checkpointing_memory(ctx)
    else:
        ctx.note("StyleNAT-1024 activation checkpointing: not reached (time)")


def _checkpointing_memory(ctx: SectionContext) -> None:
    """StyleNAT-1024 G forward+backward peak memory and time, with and without activation checkpointing."""
    from natgan import recipe as recipes
    from natgan.bench.measure import precision_context
    from natgan.bench.memory import PeakMemory

    cuda = ctx.device.type == "cuda"
    batch = recipes.load(ROOT / "recipes" / "ffhq1024.toml").train.batch_per_gpu if cuda else 1
    config = recipes.load(ROOT / "recipes" / "ffhq1024.toml").model if cuda else None
    G = build_generator("stylenat", 1024, ctx, config).to(ctx.device).train()
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(0)).to(ctx.device)
    peaks = {}
    with precision_context("bf16" if cuda else "fp32", ctx.device) as autocast:
        for enabled in (False, True):
            G.set_activation_checkpointing(enabled)
            G.zero_grad(set_to_none=True)
            try:
                with PeakMemory(ctx.device) as mem:
                    start = time.perf_counter()
                    with autocast():
                        loss = G(z).float().square().mean()
                    loss.backward()
                    _sync(ctx.device)
                    seconds = time.perf_counter() - start
            except torch.OutOfMemoryError:
                ctx.record(f"StyleNAT-{G.resolution} fwd+bwd, checkpointing {'on' if enabled else 'off'}", None,
                           "MB", note=f"out of memory at batch {batch}")
                _free(ctx.device)
                continue
            peaks[enabled] = mem.report.peak_bytes
            ctx.record(f"StyleNAT-{G.resolution} G fwd+bwd peak memory, batch {batch}, checkpointing "
                       f"{'on' if enabled else 'off'}", _mb(mem.report.peak_bytes), "MB",
                       note=f"{seconds:.2f} s for the first step (incl. any compilation); {mem.report.method}")
            G.zero_grad(set_to_none=True)
            _free(ctx.device)
    G.set_activation_checkpointing(False)
    if not cuda:
        ctx.note("checkpointing memory is judged on CUDA only (at smoke size CPU RSS is noise)")
    elif len(peaks) == 2 and None not in peaks.values():
        ctx.check("activation checkpointing lowers peak memory", peaks[True] < peaks[False],
                  f"{_mb(peaks[True])} MB vs {_mb(peaks[False])} MB")


# ------------------------------------------------------------------------------------------ FID

class TinyFeatures(torch.nn.Module):
    """Smoke-test stand-in for Inception: resize to 299 like pytorch-fid, then 2x2 mean colours (12 numbers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def fid_section(ctx: SectionContext) -> None:
    """nat-gan's FID path vs the official write-PNGs-then-score path on the same images; random-weight Inception."""
    import bench_fid

    cuda = ctx.device.type == "cuda"
    num = 2000 if cuda and ctx.remaining() >= 55 else 1000 if cuda else 16
    G = build_generator("stylenat", 256, ctx).to(ctx.device).eval()
    argv = ["--num", str(num), "--num-ref", str(num), "--random-inception", "--mode", "legacy_pytorch",
            "--device", str(ctx.device), "--workers", str(min(8, os.cpu_count() or 1) if cuda else 0)]
    if not cuda:
        argv += ["--batch", "4"]
    extractor = None
    if ctx.smoke:  # a 12-number "Inception" (same resize): both pipelines end to end in seconds on a CPU
        from natgan.metrics import FeatureExtractor

        argv = [a for a in argv if a != "--random-inception"]
        extractor = FeatureExtractor(TinyFeatures().to(ctx.device), mode="legacy_pytorch", name=None,
                                     device=ctx.device)
    args = bench_fid.parse_args(argv)

    def record_ours(ours: dict) -> None:  # before the official path, which may meet the cap
        ctx.record("ours, cold (reference features computed)", ours["cold_s"], "s",
                   note=f"{num} images, batch {ours['batch']}")
        ctx.record("ours, cached reference", ours["cached_s"], "s")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bench_fid.compare(G, f"stylenat-{G.resolution} random init", args, ctx.device, ctx.workdir,
                                   extractor=extractor, on_ours=record_ours)
    ours, official = result["ours"], result["official"]
    ctx.record("official (batch 4, PNGs, then score)", official["total_s"], "s",
               note=f"generate + write {official['generate_and_write_s']:.1f} s, score {official['score_s']:.1f} s")
    ctx.record("FID speed-up vs official (cold)", result["speedup_cold"], "x", at_least=GOALS["fid_speedup"])
    rel = abs(ours["fid"] - official["fid"]) / max(abs(official["fid"]), 1e-12)
    ctx.record("FID ours vs official, relative difference", rel, at_most=GOALS["fid_agreement_rel"],
               note=f"ours {ours['fid']:.6g}, official {official['fid']:.6g} (same seeds, random-weight Inception)")


# ------------------------------------------------------------------------------------------ torchrun

def ddp_section(ctx: SectionContext) -> None:
    """`torchrun -m natgan train` with one process: the process group (NCCL on CUDA, gloo on CPU), DDP and the
    rank-0 checkpoint of the real CLI. One GPU cannot host two NCCL ranks, so this is the single-rank path."""
    from natgan import checkpoint
    from natgan.data import prepare_digits

    data = ctx.workdir / "digits32.lmdb"
    prepare_digits(data, sizes=[32], progress=False)
    steps, outdir = 2 if ctx.smoke else 4, ctx.workdir / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "natgan",
           "train", "--recipe", str(ROOT / "recipes" / "demo.toml"), "--data", str(data), "--outdir", str(outdir),
           "--no-progress", "--set", f"train.iterations={steps}", "--set", f"train.checkpoint_every={steps}",
           "--set", f"train.sample_every={steps}", "--set", "data.workers=0",
           "--set", f"train.device={'cuda' if ctx.device.type == 'cuda' else 'cpu'}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=ctx.child_timeout())
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - start
    (ctx.out_dir or ctx.workdir).joinpath("torchrun.log").write_text(out)
    backend = "NCCL" if ctx.device.type == "cuda" else "gloo"
    latest = outdir / "latest.pt"
    step = checkpoint.load(latest)["progress"]["step"] if proc.returncode == 0 and latest.is_file() else None
    ctx.check(f"torchrun, 1 process ({backend}): {steps} training steps and a checkpoint", step == steps,
              f"exit {proc.returncode}, checkpoint step {step}; {_last_line(out)}")
    ctx.record("torchrun run, start to finish", seconds, "s",
               note=f"process group start, data, {steps} steps, checkpoint")


# ------------------------------------------------------------------------------------------ ADA, metric set

def ada_section(ctx: SectionContext) -> None:
    """Training img/s with ADA ``bgc`` (fixed p = 0.6) and DiffAugment vs no augmentation, the same steps on
    synthetic batches (``benchmarks/bench_ada.py``): the ffhq256 recipe on a GPU, the demo recipe elsewhere."""
    from bench_ada import CONFIGS, measure

    cuda = ctx.device.type == "cuda" and not ctx.smoke
    recipe = ROOT / "recipes" / ("ffhq256.toml" if cuda else "demo.toml")
    configs = {name: CONFIGS[name] for name in ("none", "ada bgc p=0.6", "diffaug")}
    steps, rounds, warmup = (8, 3, 2) if cuda else (1, 1, 1)
    r = measure(str(ctx.device), steps=steps, rounds=rounds, warmup=warmup, recipe=str(recipe), configs=configs)
    note = f"{recipe.name}, batch {r['batch']}, {steps} steps x {rounds} rounds (median)"
    ctx.record("training without augmentation", r["img_per_s"]["none"], "img/s", note=note)
    ctx.record("ADA bgc (p = 0.6) slower than none", r["overhead_pct"]["ada bgc p=0.6"], "%",
               at_most=GOALS["ada_overhead_pct"], note=f"{r['img_per_s']['ada bgc p=0.6']:.1f} img/s")
    ctx.record("DiffAugment slower than none", r["overhead_pct"]["diffaug"], "%",
               note=f"{r['img_per_s']['diffaug']:.1f} img/s")


def metrics_section(ctx: SectionContext) -> None:
    """``fid,kid,pr,dc,is`` together vs FID alone (``benchmarks/bench_metrics.py``), random-weight Inception and
    VGG16 (same compute as the real ones). 50k samples when the budget left allows, else 10k, and it says so."""
    from bench_metrics import measure

    if ctx.smoke or ctx.device.type != "cuda":
        n, res, config = 12, 16, TINY["stylegan2"]   # IS needs at least 10 images
    else:
        n, res, config = (50_000 if ctx.remaining() >= 600 else 10_000), 256, None
    workdir = ctx.workdir / "metrics"
    workdir.mkdir(parents=True, exist_ok=True)
    r = measure(str(ctx.device), n=n, res=res, model="stylegan2", separately=False, workdir=workdir,
                model_config=config)
    scaled = "" if n == 50_000 or ctx.smoke or ctx.device.type != "cuda" else \
        " (50k needs about 10 minutes: run with --only metrics --budget 900)"
    ctx.record("fid alone", r["fid_only_s"], "s", note=f"{n} StyleGAN2-{res} samples vs {n} reference images{scaled}")
    ctx.record("fid,kid,pr,dc,is together", r["all_five_s"], "s", note="features shared across metrics")
    ctx.record("metric set / fid alone", r["ratio_all_vs_fid"], "x")


def peers_section(ctx: SectionContext) -> None:
    """nat-gan vs the official code on the same weights (``benchmarks/bench_peers.py``): parity and speed
    ratios. The official checkouts cannot be downloaded on the node: put them (fetched elsewhere, never
    committed) under ``$NATGAN_PEERS_DIR/{rosinality,stylegan2-ada,ganformer,styleswin,stylenat}`` (ganformer:
    gansformer's ``pytorch_version/``; styleswin: microsoft/StyleSwin; stylenat: SHI-Labs/StyleNAT, whose NA
    runs on bench_peers' pure-PyTorch NATTEN 0.17 stand-in) and carry that folder."""
    from bench_peers import PEERS, run_peers

    root = os.environ.get("NATGAN_PEERS_DIR")
    found = {peer: str(Path(root) / peer) for peer in PEERS if root and (Path(root) / peer).is_dir()}
    ctx.record("official checkouts found", len(found), "", note=", ".join(found) or
               "none: set NATGAN_PEERS_DIR to a folder holding rosinality/, stylegan2-ada/, ganformer/, "
               "styleswin/, stylenat/")
    if not found:
        return
    cuda = ctx.device.type == "cuda" and not ctx.smoke
    report = run_peers(found, device=str(ctx.device), size=256 if cuda else 16, style_dim=512 if cuda else 32,
                       n_mlp=8 if cuda else 2, channel_multiplier=2 if cuda else 1, batches=(1, 16) if cuda else (1,),
                       train=cuda, float64=not cuda, repeat=1)
    for peer, r in report["models"].items():
        parity = r["parity"]["float32"]
        ctx.record(f"{peer}: max |image difference|, float32", parity["max_abs_diff_image"], at_most=1e-3,
                   note=f"D logits {parity['max_abs_diff_d_logits']:.1e}")
        for row in r["generator"]:
            ctx.record(f"{peer}: generator img/s nat-gan / official, batch {row['batch']}", row["img_per_s_ratio"],
                       "x", at_least=1.0, note=f"{row['natgan_img_per_s']} vs {row['official_img_per_s']} img/s")
        if "official_na" in r:
            ctx.note(f"{peer}: {r['official_na']}")
        if "train_step" in r:
            t = r["train_step"]
            name = f"{peer}: training step img/s nat-gan / official, batch {t['batch']}"
            if t.get("official_error") and not t.get("natgan_error"):   # nothing to compare against
                ctx.record(name, None, "x", note=f"official: {t['official_error']}; nat-gan "
                                                 f"{t['natgan_img_per_s']} img/s")
            else:
                ctx.record(name, t["img_per_s_ratio"], "x", at_least=1.0)


# ------------------------------------------------------------------------------------------ registry

SECTIONS: list[Section] = [   # priority order; caps sum to the default budget, 540 s
    Section("doctor", doctor_section, 40, ("needed doctor checks pass (NA backends vs torch, flex compiles, dirs)",)),
    Section("gpu_tests", gpu_tests_section, 90, ("pytest -m gpu: no failures",)),
    Section("na_op", na_op_section, 90, (f"flex/torch vs float64 CPU: fp32 <= {GOALS['na_fp32_err']}, "
                                         f"bf16 <= {GOALS['na_bf16_err']} (forward and all gradients)",
                                         "every StyleNAT-256/-1024 geometry measured")),
    Section("generators", generators_section, 140,
            (f"StyleNAT-256 batch 1 TF32 >= {GOALS['stylenat_b1_tf32_img_s']:g} img/s",
             f"StyleNAT-256 batch 32 bf16 >= {GOALS['stylenat_b32_bf16_img_s']:g} img/s")),
    Section("training", training_section, 90, (f"training >= {GOALS['train_img_s_per_gpu']:g} img/s per GPU "
                                               "with R1 + bCR", "activation checkpointing lowers memory at 1024")),
    Section("fid", fid_section, 60, (f"FID >= {GOALS['fid_speedup']:g}x faster than the official path",
                                     f"the two FIDs agree to {GOALS['fid_agreement_rel']:g}")),
    Section("ddp", ddp_section, 30, ("torchrun -m natgan train, one NCCL rank: steps and checkpoint",)),
    # Past the default 540 s budget: reached with a larger --budget, or alone with --only ada,metrics,peers.
    Section("ada", ada_section, 90, (f"ADA bgc <= {GOALS['ada_overhead_pct']:g} % slower than no augmentation",)),
    Section("metrics", metrics_section, 240, ("fid,kid,pr,dc,is together far below the sum of single runs",)),
    Section("peers", peers_section, 120, ("parity with the official code (float32) and img/s ratio >= 1",)),
]


def machine_info(device: torch.device) -> dict:
    from natgan import __version__
    from natgan.bench.measure import device_name

    info = {"device_name": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "nat-gan": __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if commit:
            info["commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        from torch import _dynamo

        _dynamo.reset()
    except Exception:  # noqa: BLE001 - best effort between sections
        pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole run (default 540)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-acceptance"),
                   help="report folder (default: $OUT, else ./gpu-acceptance)")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep sections' scratch files here (default: a temporary folder, removed)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: every section in seconds (CPU CI)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; --smoke: 1, which a shared box runs "
                        "far faster than several spinning threads)")
    p.add_argument("--only", default=None, help="comma list of sections to run (default: all)")
    p.add_argument("--cap", action="append", default=[], metavar="SECTION=SECONDS",
                   help="change one section's cap, e.g. --cap na_op=200 (repeatable)")
    p.add_argument("--list", action="store_true", help="print the sections, caps and goals, and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke and args.threads is None:
        args.threads = 1
    if args.list:
        for s in SECTIONS:
            print(f"{s.name:12s} cap {s.cap_s:4.0f} s  {'; '.join(s.goals)}")
        return 0
    from natgan.errors import NatGanError
    from natgan.devices import resolve_device

    try:
        device = resolve_device(args.device)
    except NatGanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sections = SECTIONS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {s.name for s in SECTIONS}]
        if unknown:
            print(f"error: --only {','.join(unknown)}: no such section (see --list)", file=sys.stderr)
            return 2
        sections = [s for s in SECTIONS if s.name in wanted]
    for item in args.cap:
        name, _, seconds = item.partition("=")
        try:
            index = [s.name for s in sections].index(name.strip())
            cap = float(seconds)
        except ValueError:
            print(f"error: --cap {item}: expected SECTION=SECONDS with a section of this run (see --list)",
                  file=sys.stderr)
            return 2
        sections[index] = dataclasses.replace(sections[index], cap_s=cap)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    report = run_sections(sections, out_dir=args.out, budget_s=args.budget, device=device, smoke=args.smoke,
                          machine=machine_info(device), cleanup=_cleanup, log=log, work_root=args.workdir)
    print((args.out / "acceptance.md").read_text())
    statuses = report["summary"]["sections"].values()
    if args.smoke:  # CPU figures fail GPU goals by design; only broken sections fail a smoke run
        return 0 if all(s in ("passed", "failed") for s in statuses) else 1
    return 0 if report["summary"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
