"""Section ``peers``: nat-gan vs the official code on the same weights (``benchmarks/bench_peers.py``)."""

from __future__ import annotations

import os
from pathlib import Path

from natgan.bench.acceptance import SectionContext


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
