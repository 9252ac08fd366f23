"""Section ``na_op``: the NA op at every StyleNAT-256/-1024 geometry, each backend vs the float64 CPU op."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import GOALS, mb, model_config, sync

CPU_EAGER_MAX_SIZE = 32   # largest map eager (CPU) flex/natten are run on


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
                    sync(ctx.device)
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
                               f"{str(timing_dtype).split('.')[1]})", ms, "ms", note=f"peak {mb(peak)} MB")
            except Exception as exc:  # noqa: BLE001
                ctx.note(f"{g.label} {backend} timing: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        done += 1
    if not cuda:
        ctx.note(f"CPU: flex and natten run eagerly (forward only, N x N scores), so only in fp32, untimed, on "
                 f"maps up to {CPU_EAGER_MAX_SIZE}²; the torch backend on every geometry")
    ctx.record("geometries measured", done, at_least=len(geometries),
               note=f"{len(geometries)} geometries of StyleNAT-256 and -1024; backends {', '.join(backends)}")
