"""nat-gan against the official implementations, side by side, on the SAME weights.

    .venv/bin/python benchmarks/bench_peers.py --rosinality /tmp/stylegan2-pytorch \\
        --stylegan2-ada /tmp/stylegan2-ada-pytorch --gansformer /tmp/gansformer/pytorch_version \\
        [--device cpu] [--size 32] [--json]

For every official checkout given (nothing of theirs is part of nat-gan), per model:

1. builds the official networks with the official constructors (seeded), writes them as the official code
   saves them (rosinality: ``torch.save`` of train.py's dict; stylegan2-ada / GANformer: ``pickle.dump`` of
   the training loop's snapshot; GANformer with ``--ganformer-default``'s settings), imports that file
   with ``nat-gan import`` (so the importer is exercised too);
2. parity: max |nat-gan - official| of the generator output (stored noise, fixed z) and of D's logits, in
   float32 on the device, and in float64 where the official code can run in float64;
3. speed: generator img/s at each ``--batch`` and a training step (D step + G step, non-saturating loss,
   Adam; :func:`natgan.bench.measure.measure_train_step` drives both implementations through the same
   step, so only the networks differ), plus peak memory, each with the ratio nat-gan / official
   (img/s ratio > 1: nat-gan faster; memory ratio < 1: nat-gan leaner). The two implementations alternate
   ``--repeat`` times and the best of each is kept, because shared machines are noisy.

Official CUDA ops: on CUDA their JIT-compiled kernels are used where they compile; on CPU rosinality's
``cpp_extension.load`` (which runs at import and needs a CUDA toolchain) is answered with ``None`` during
the import, so its own CPU fallbacks run; stylegan2-ada's ops pick their reference implementations on CPU
by themselves. The official stylegan2-ada networks are built with ``--fp32`` settings (no fp16 layers, no
clamp) so that both sides compute at equal precision.

:func:`run_peers` is the importable entry point (the GPU acceptance script calls it); it returns a dict.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from natgan import checkpoint
from natgan.bench.measure import BenchSettings, machine, measure_generator, measure_train_step, resolve_device
from natgan.importers import import_checkpoint
from natgan.models import get_spec

PEERS = ("rosinality", "stylegan2-ada", "ganformer")


# ------------------------------------------------------------------------------------------ official code

@contextlib.contextmanager
def official_checkout(path: str | Path, device: torch.device) -> Iterator[Path]:
    """Import from ``path`` (prepended to sys.path); afterwards forget every module loaded from it.

    The checkouts share top-level names (``training``, ``torch_utils``, ``dnnlib``), so each peer gets a
    clean slate. On CPU, ``torch.utils.cpp_extension.load`` returns None meanwhile (see module docstring).
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise SystemExit(f"error: {path}: not a directory (expected a checkout of the official code)")
    import torch.utils.cpp_extension as cpp

    saved_load = cpp.load
    if device.type == "cpu":
        cpp.load = lambda *args, **kwargs: None
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        cpp.load = saved_load
        sys.path.remove(str(root))
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            if file.startswith(str(root)):
                del sys.modules[name]


class _OfficialG(nn.Module):
    """The contract ``measure_generator``/``measure_train_step`` use: ``G(z)``, ``z_dim``, ``resolution``."""

    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor], z_dim: int,
                 resolution: int):
        super().__init__()
        self.net, self.call, self.z_dim, self.resolution = net, call, z_dim, resolution

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.call(self.net, z)


class _OfficialD(nn.Module):
    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.net, self.call = net, call

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.call(self.net, images)


def rosinality_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path
                    ) -> tuple[_OfficialG, _OfficialD, Path, Callable]:
    """Official rosinality G/D (seeded) and the train.py-style checkpoint holding their weights."""
    import model as ros  # noqa: E402  (the official model.py, from the checkout on sys.path)

    torch.manual_seed(0)
    g = ros.Generator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier).eval()
    d = ros.Discriminator(size, channel_multiplier=channel_multiplier).eval()
    _redraw(g, d)
    path = workdir / "rosinality.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
                "args": argparse.Namespace(size=size, latent=style_dim, n_mlp=n_mlp,
                                           channel_multiplier=channel_multiplier, arch="stylegan2")}, path)
    G = _OfficialG(g, lambda net, z: net([z])[0], style_dim, size)
    D = _OfficialD(d, lambda net, x: net(x))
    const = lambda net, z: net([z], randomize_noise=False)[0]  # noqa: E731
    return G, D, path, const


def stylegan2_ada_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path
                       ) -> tuple[_OfficialG, _OfficialD, Path, Callable]:
    """Official stylegan2-ada G/D (``--cfg=stylegan2 --fp32`` settings) and their training_loop.py snapshot."""
    import dnnlib  # noqa: E402

    common = dict(c_dim=0, img_resolution=size, img_channels=3)
    torch.manual_seed(0)
    g = dnnlib.util.construct_class_by_name(
        class_name="training.networks.Generator", z_dim=style_dim, w_dim=style_dim,
        mapping_kwargs=dnnlib.EasyDict(num_layers=n_mlp),
        synthesis_kwargs=dnnlib.EasyDict(channel_base=16384 * channel_multiplier, channel_max=512,
                                         num_fp16_res=0, conv_clamp=None), **common).eval()
    d = dnnlib.util.construct_class_by_name(
        class_name="training.networks.Discriminator", channel_base=16384 * channel_multiplier, channel_max=512,
        num_fp16_res=0, conv_clamp=None, epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4), **common).eval()
    _redraw(g, d)
    path = workdir / "network-snapshot-000000.pkl"
    snapshot = {"training_set_kwargs": {"xflip": False}}
    for name, module in (("G", g), ("D", d), ("G_ema", g)):
        snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    with open(path, "wb") as fh:
        pickle.dump(snapshot, fh)
    empty = torch.zeros(0)

    def gen_call(net, z, mode="random"):
        return net(z, empty.new_zeros(z.shape[0], 0).to(z), noise_mode=mode)

    G = _OfficialG(g, gen_call, style_dim, size)
    D = _OfficialD(d, lambda net, x: net(x, empty.new_zeros(x.shape[0], 0).to(x)))
    return G, D, path, lambda net, z: gen_call(net, z, "const")


def ganformer_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path
                   ) -> tuple[_OfficialG, _OfficialD, Path, Callable]:
    """Official GANformer G/D with ``--ganformer-default`` settings (k = 16 + 1 components of ``style_dim / 16``)
    and their ``training_loop.save_nets`` snapshot."""
    _stand_ins()
    import dnnlib  # noqa: E402

    components = 16
    d = style_dim // components
    common = dict(c_dim=0, img_resolution=size, img_channels=3)
    synthesis = dict(architecture="resnet", style=True, local_noise=True, transformer=True, use_pos=True, num_heads=1,
                     start_res=0, end_res=8, norm="layer", integration="mul", kmeans=True, kmeans_iters=1,
                     pos_type="sinus", pos_init="uniform", pos_directions_num=2,
                     channel_base=16384 * channel_multiplier, channel_max=512)
    mapping = dict(resnet=True, ltnt2ltnt=True, transformer=True, use_pos=True, num_heads=1, num_layers=n_mlp)
    torch.manual_seed(0)
    g = dnnlib.util.construct_class_by_name(class_name="training.networks.Generator", z_dim=d, w_dim=d,
                                            k=components + 1, mapping_kwargs=dnnlib.EasyDict(mapping),
                                            synthesis_kwargs=dnnlib.EasyDict(synthesis), **common).eval()
    disc = dnnlib.util.construct_class_by_name(class_name="training.networks.Discriminator",
                                               channel_base=16384 * channel_multiplier, channel_max=512,
                                               epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4), **common).eval()
    _redraw(g, disc)
    path = workdir / "network-snapshot-000000.pkl"
    snapshot = {"dataset_args": {"mirror_augment": True}}
    for name, module in (("G", g), ("D", disc), ("Gs", g)):
        snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    with open(path, "wb") as fh:
        pickle.dump(snapshot, fh)

    def gen_call(net, z, mode="random"):
        return net(z=z.view(z.shape[0], components + 1, d), c=None, noise_mode=mode)[0]

    G = _OfficialG(g, gen_call, (components + 1) * d, size)
    D = _OfficialD(disc, lambda net, x: net(x, None))
    return G, D, path, lambda net, z: gen_call(net, z, "const")


def _stand_ins() -> None:
    """GANformer's dnnlib/training.misc import seaborn, termcolor and gdown for plots, colours and downloads
    only; where they are not installed, empty stand-ins let the networks import (none of them is called)."""
    import importlib.util
    import types

    for name in ("seaborn", "termcolor", "gdown"):
        if importlib.util.find_spec(name) is None and name not in sys.modules:
            module = types.ModuleType(name)
            module.colored = lambda text, *args, **kwargs: text
            sys.modules[name] = module


def _redraw(*modules: nn.Module) -> None:
    """Non-zero biases and noise strengths (official inits are 0/1), so parity covers every parameter."""
    gen = torch.Generator().manual_seed(1000)
    with torch.no_grad():
        for module in modules:
            for name, p in module.named_parameters():
                if name.endswith("bias") or "noise" in name:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)


BUILDERS = {"rosinality": rosinality_pair, "stylegan2-ada": stylegan2_ada_pair, "ganformer": ganformer_pair}


# ------------------------------------------------------------------------------------------ measurement

def _natgan_pair(ckpt_path: Path, kind: str) -> tuple[nn.Module, nn.Module]:
    _, ckpt = import_checkpoint(ckpt_path, kind)
    spec = get_spec(ckpt["model"]["name"])
    G = checkpoint.build_generator(ckpt)
    _, D = spec.builder(spec.make_config(ckpt["model"]["config"]))
    D.load_state_dict(ckpt["weights"]["D"])
    return G, D.eval()


def _parity(G: nn.Module, D: nn.Module, off_G: _OfficialG, off_D: _OfficialD, const: Callable,
            device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    G, D = copy.deepcopy(G).to(device, dtype).eval(), copy.deepcopy(D).to(device, dtype).eval()
    og, od = copy.deepcopy(off_G).to(device, dtype).eval(), copy.deepcopy(off_D).to(device, dtype).eval()
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(123)).to(device, dtype)
    with torch.no_grad():
        ours = G.synthesis(G.mapping(z), noise_mode="const")
        theirs = const(og.net, z)
        return {"max_abs_diff_image": float((ours - theirs).abs().max()),
                "max_abs_diff_d_logits": float((D(theirs) - od(theirs)).abs().max()),
                "image_std": float(theirs.std())}


def _best(rows_a: list[dict], key: str) -> dict:
    return max(rows_a, key=lambda r: r[key])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def run_peers(checkouts: dict[str, str], *, device: str = "auto", size: int | None = None, style_dim: int = 512,
              n_mlp: int = 8, channel_multiplier: int = 2, batches: tuple[int, ...] = (1, 16),
              train_batch: int | None = None, warmup: int | None = None, rounds: int | None = None,
              repeat: int = 2, train: bool = True, float64: bool = True) -> dict[str, Any]:
    """Parity and speed of nat-gan vs each official implementation in ``checkouts`` ({peer: path}).

    Returns ``{"machine": ..., "settings": ..., "models": {peer: {...}}}``; every ratio is nat-gan / official.
    """
    dev = resolve_device(device)
    size = size or (256 if dev.type == "cuda" else 32)
    train_batch = train_batch or (max(batches) if dev.type == "cuda" else 4)
    settings = BenchSettings(batches=tuple(batches), warmup=warmup, rounds=rounds, precision="fp32", device=str(dev),
                             flops=False, train=train, train_batch=train_batch)
    out: dict[str, Any] = {"machine": machine(dev), "settings": {
        "size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": channel_multiplier,
        "batches": list(batches), "train_batch": train_batch, "precision": "fp32", "repeat": repeat}, "models": {}}
    for peer, path in checkouts.items():
        if peer not in BUILDERS:
            raise SystemExit(f"error: unknown peer '{peer}' (known: {', '.join(PEERS)})")
        with official_checkout(path, dev) as root, tempfile.TemporaryDirectory() as tmp:
            off_G, off_D, ckpt_path, const = BUILDERS[peer](root, size, style_dim, n_mlp, channel_multiplier, Path(tmp))
            G, D = _natgan_pair(ckpt_path, peer)
            result: dict[str, Any] = {"natgan_model": "ganformer" if peer == "ganformer" else "stylegan2", "parity": {
                "float32": _parity(G, D, off_G, off_D, const, dev, torch.float32)}}
            if float64:
                try:
                    result["parity"]["float64"] = _parity(G, D, off_G, off_D, const, dev, torch.float64)
                except (RuntimeError, AssertionError) as exc:   # stylegan2-ada's ops require float32 filters
                    result["parity"]["float64"] = f"official code cannot run in float64 ({type(exc).__name__})"
            runs: dict[str, list] = {"natgan": [], "official": []}
            for _ in range(repeat):
                for who, (g, d) in (("natgan", (G, D)), ("official", (off_G, off_D))):
                    gen = measure_generator(g, settings, device=dev, label=f"{peer} {who}")
                    step = measure_train_step(copy.deepcopy(g), copy.deepcopy(d), settings, device=dev,
                                              label=f"{peer} {who}") if train else None
                    runs[who].append((gen, step))
            result["generator"] = []
            for i, batch in enumerate(batches):
                ours = _best([r[0]["throughput"][i] for r in runs["natgan"]], "img_per_s")
                theirs = _best([r[0]["throughput"][i] for r in runs["official"]], "img_per_s")
                result["generator"].append({
                    "batch": batch, "natgan_img_per_s": ours["img_per_s"], "official_img_per_s": theirs["img_per_s"],
                    "img_per_s_ratio": _ratio(ours["img_per_s"], theirs["img_per_s"]),
                    "natgan_peak_mb": ours["peak_memory_mb"], "official_peak_mb": theirs["peak_memory_mb"],
                    "natgan_added_mb": ours["added_memory_mb"], "official_added_mb": theirs["added_memory_mb"],
                    "added_memory_ratio": _ratio(ours["added_memory_mb"], theirs["added_memory_mb"])})
            if train:
                ours = _best([r[1] for r in runs["natgan"]], "img_per_s")
                theirs = _best([r[1] for r in runs["official"]], "img_per_s")
                result["train_step"] = {
                    "batch": train_batch, "natgan_img_per_s": ours["img_per_s"],
                    "official_img_per_s": theirs["img_per_s"],
                    "img_per_s_ratio": _ratio(ours["img_per_s"], theirs["img_per_s"]),
                    "natgan_added_mb": ours["added_memory_mb"], "official_added_mb": theirs["added_memory_mb"],
                    "added_memory_ratio": _ratio(ours["added_memory_mb"], theirs["added_memory_mb"]),
                    "step": ours["loss"]}
            out["models"][peer] = result
    return out


def _table(result: dict[str, Any]) -> str:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rosinality", help="checkout of rosinality/stylegan2-pytorch")
    parser.add_argument("--stylegan2-ada", dest="stylegan2_ada", help="checkout of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--gansformer", help="checkout of dorarad/gansformer (its pytorch_version/ folder)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="resolution [256 on CUDA, 32 on CPU]")
    parser.add_argument("--style-dim", type=int, default=512)
    parser.add_argument("--n-mlp", type=int, default=8)
    parser.add_argument("--channel-multiplier", type=int, default=2)
    parser.add_argument("--batch", default="1,16", help="generator batch sizes")
    parser.add_argument("--train-batch", type=int, default=None, help="[largest --batch on CUDA, 4 on CPU]")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2, help="alternate the two implementations this many times")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    checkouts = {k: v for k, v in (("rosinality", args.rosinality), ("stylegan2-ada", args.stylegan2_ada),
                                   ("ganformer", args.gansformer)) if v}
    if not checkouts:
        parser.error("give at least one official checkout (--rosinality, --stylegan2-ada, --gansformer)")
    result = run_peers(checkouts, device=args.device, size=args.size, style_dim=args.style_dim, n_mlp=args.n_mlp,
                       channel_multiplier=args.channel_multiplier,
                       batches=tuple(int(b) for b in args.batch.split(",")), train_batch=args.train_batch,
                       warmup=args.warmup, rounds=args.rounds, repeat=args.repeat, train=not args.no_train)
    print(json.dumps(result, indent=2) if args.json else _table(result))


if __name__ == "__main__":
    main()
