"""nat-gan against another implementation of the same model, on the same weights: parity and speed.

The shared runner of ``benchmarks/bench_peers.py``: the script builds each official model from its checkout
(``benchmarks/peers/``), wraps it in :class:`OfficialG` / :class:`OfficialD` and writes it as the official code
saves it; :func:`compare` imports that file with nat-gan's importer and measures both sides the same way
(:func:`natgan.bench.measure.measure_generator` / :func:`~natgan.bench.measure.measure_train_step`), so only
the networks differ. Every ratio is nat-gan / official (img/s ratio > 1: nat-gan faster; memory ratio < 1:
nat-gan leaner). Nothing here imports or runs official code itself.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from natgan import checkpoint
from natgan.bench.measure import BenchSettings, measure_generator, measure_train_step
from natgan.importers import import_checkpoint
from natgan.models import get_spec


class OfficialG(nn.Module):
    """The contract ``measure_generator``/``measure_train_step`` use: ``G(z)``, ``z_dim``, ``resolution``.
    ``notes``: what the result must say about how the official side ran (copied into it)."""

    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor], z_dim: int,
                 resolution: int, notes: dict[str, str] | None = None):
        super().__init__()
        self.net, self.call, self.z_dim, self.resolution = net, call, z_dim, resolution
        self.notes = dict(notes or {})

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.call(self.net, z)


class OfficialD(nn.Module):
    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.net, self.call = net, call

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.call(self.net, images)


def natgan_pair(ckpt_path: Path, kind: str) -> tuple[nn.Module, nn.Module]:
    _, ckpt = import_checkpoint(ckpt_path, kind)
    spec = get_spec(ckpt["model"]["name"])
    G = checkpoint.build_generator(ckpt)
    _, D = spec.builder(spec.make_config(ckpt["model"]["config"]))
    D.load_state_dict(ckpt["weights"]["D"])
    return G, D.eval()


def parity(G: nn.Module, D: nn.Module, off_G: OfficialG, off_D: OfficialD, const: Callable,
            device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    G, D = copy.deepcopy(G).to(device, dtype).eval(), copy.deepcopy(D).to(device, dtype).eval()
    og, od = copy.deepcopy(off_G).to(device, dtype).eval(), copy.deepcopy(off_D).to(device, dtype).eval()
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(123)).to(device, dtype)
    noise = {"noise_mode": "const"} if "noise_mode" in inspect.signature(G.synthesis).parameters else {}
    with torch.no_grad():
        ours = G.synthesis(G.mapping(z), **noise)
        theirs = const(og.net, z)
        return {"max_abs_diff_image": float((ours - theirs).abs().max()),
                "max_abs_diff_d_logits": float((D(theirs) - od(theirs)).abs().max()),
                "image_std": float(theirs.std())}


def best(rows_a: list[dict], key: str) -> dict:
    return max(rows_a, key=lambda r: -math.inf if r[key] is None else r[key])


def train_step(G: nn.Module, D: nn.Module, settings: BenchSettings, device: torch.device, label: str
                ) -> dict[str, Any]:
    """``measure_train_step`` on copies; running out of device memory is a result, not the end of the run
    (the official StyleNAT step on its stand-in NA keeps K*K gathered tensors per NA call for backward,
    ~190 GB at 256 px and batch 16)."""
    try:
        return measure_train_step(copy.deepcopy(G), copy.deepcopy(D), settings, device=device, label=label)
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"img_per_s": None, "added_memory_mb": None, "loss": None,
                "error": f"out of memory at batch {settings.train_batch}"}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def compare(kind: str, official: tuple[OfficialG, OfficialD, Path, Callable], *, settings: BenchSettings,
            device: torch.device, batches: tuple[int, ...], train_batch: int, repeat: int, train: bool,
            float64: bool) -> dict[str, Any]:
    """Parity and speed of nat-gan vs one official implementation: ``official`` is what a peer builder returns
    (G, D, the checkpoint file it wrote, G's call with stored noise), ``kind`` the ``nat-gan import --from``
    format of that file. The two implementations alternate ``repeat`` times and the best of each is kept,
    because shared machines are noisy."""
    off_G, off_D, ckpt_path, const = official
    G, D = natgan_pair(ckpt_path, kind)
    result: dict[str, Any] = {**off_G.notes, "parity": {
        "float32": parity(G, D, off_G, off_D, const, device, torch.float32)}}
    if float64:
        try:
            result["parity"]["float64"] = parity(G, D, off_G, off_D, const, device, torch.float64)
        except (RuntimeError, AssertionError) as exc:   # stylegan2-ada's ops require float32 filters
            result["parity"]["float64"] = f"official code cannot run in float64 ({type(exc).__name__})"
    runs: dict[str, list] = {"natgan": [], "official": []}
    for _ in range(repeat):
        for who, (g, d) in (("natgan", (G, D)), ("official", (off_G, off_D))):
            gen = measure_generator(g, settings, device=device, label=f"{kind} {who}")
            step = train_step(g, d, settings, device, f"{kind} {who}") if train else None
            runs[who].append((gen, step))
    result["generator"] = []
    for i, batch in enumerate(batches):
        ours = best([r[0]["throughput"][i] for r in runs["natgan"]], "img_per_s")
        theirs = best([r[0]["throughput"][i] for r in runs["official"]], "img_per_s")
        result["generator"].append({
            "batch": batch, "natgan_img_per_s": ours["img_per_s"], "official_img_per_s": theirs["img_per_s"],
            "img_per_s_ratio": ratio(ours["img_per_s"], theirs["img_per_s"]),
            "natgan_peak_mb": ours["peak_memory_mb"], "official_peak_mb": theirs["peak_memory_mb"],
            "natgan_added_mb": ours["added_memory_mb"], "official_added_mb": theirs["added_memory_mb"],
            "added_memory_ratio": ratio(ours["added_memory_mb"], theirs["added_memory_mb"])})
    if train:
        ours = best([r[1] for r in runs["natgan"]], "img_per_s")
        theirs = best([r[1] for r in runs["official"]], "img_per_s")
        result["train_step"] = {
            "batch": train_batch, "natgan_img_per_s": ours["img_per_s"],
            "official_img_per_s": theirs["img_per_s"],
            "img_per_s_ratio": ratio(ours["img_per_s"], theirs["img_per_s"]),
            "natgan_added_mb": ours["added_memory_mb"], "official_added_mb": theirs["added_memory_mb"],
            "added_memory_ratio": ratio(ours["added_memory_mb"], theirs["added_memory_mb"]),
            "step": ours["loss"] or theirs["loss"],
            **{f"{who}_error": row["error"] for who, row in (("natgan", ours), ("official", theirs))
               if "error" in row}}
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['machine']['device_name']}, torch {result['machine']['torch']}; "
             f"settings: {json.dumps(result['settings'])}",
             "| peer | max |Δ| image fp32 / fp64 | max |Δ| D fp32 | batch | G img/s nat-gan / official (ratio) | "
             "added MB ratio |", "|---|---|---|---|---|---|"]
    for peer, r in result["models"].items():
        p32, p64 = r["parity"]["float32"], r["parity"].get("float64")
        f64 = f"{p64['max_abs_diff_image']:.1e}" if isinstance(p64, dict) else "–"
        for row in r["generator"]:
            lines.append(f"| {peer} | {p32['max_abs_diff_image']:.1e} / {f64} | {p32['max_abs_diff_d_logits']:.1e} | "
                         f"{row['batch']} | {row['natgan_img_per_s']} / {row['official_img_per_s']} "
                         f"({row['img_per_s_ratio']}) | {row['added_memory_ratio']} |")
        if "train_step" in r:
            t = r["train_step"]
            lines.append(f"| {peer} | | | train {t['batch']} | {t['natgan_img_per_s']} / {t['official_img_per_s']} "
                         f"({t['img_per_s_ratio']}) | {t['added_memory_ratio']} |")
    return "\n".join(lines)
