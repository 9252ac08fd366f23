"""Section ``doctor``: `nat-gan doctor` on this machine, needed checks judged, the rest recorded."""

from __future__ import annotations

from natgan.bench.acceptance import SectionContext


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
