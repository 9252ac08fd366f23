"""Section ``training``: the real training loop's img/s (R1 + bCR) and StyleNAT-1024 activation checkpointing."""

from __future__ import annotations

import time

import torch

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import GOALS, ROOT, build_generator, free_memory, mb, sync


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
        free_memory(ctx.device)
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
                    sync(ctx.device)
                    seconds = time.perf_counter() - start
            except torch.OutOfMemoryError:
                ctx.record(f"StyleNAT-{G.resolution} fwd+bwd, checkpointing {'on' if enabled else 'off'}", None,
                           "MB", note=f"out of memory at batch {batch}")
                free_memory(ctx.device)
                continue
            peaks[enabled] = mem.report.peak_bytes
            ctx.record(f"StyleNAT-{G.resolution} G fwd+bwd peak memory, batch {batch}, checkpointing "
                       f"{'on' if enabled else 'off'}", mb(mem.report.peak_bytes), "MB",
                       note=f"{seconds:.2f} s for the first step (incl. any compilation); {mem.report.method}")
            G.zero_grad(set_to_none=True)
            free_memory(ctx.device)
    G.set_activation_checkpointing(False)
    if not cuda:
        ctx.note("checkpointing memory is judged on CUDA only (at smoke size CPU RSS is noise)")
    elif len(peaks) == 2 and None not in peaks.values():
        ctx.check("activation checkpointing lowers peak memory", peaks[True] < peaks[False],
                  f"{mb(peaks[True])} MB vs {mb(peaks[False])} MB")
