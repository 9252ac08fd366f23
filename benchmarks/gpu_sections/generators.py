"""Section ``generators``: generator img/s, official protocol (batch 1, TF32) and batch 32 bf16, eager and compiled."""

from __future__ import annotations

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import GOALS, build_generator, free_memory

OFFICIAL_ROUNDS, OFFICIAL_WARMUP = 500, 10


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
            free_memory(ctx.device)
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
