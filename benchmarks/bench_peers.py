"""nat-gan against the official implementations, side by side, on the SAME weights.

    .venv/bin/python benchmarks/bench_peers.py --rosinality /tmp/stylegan2-pytorch \\
        --stylegan2-ada /tmp/stylegan2-ada-pytorch --gansformer /tmp/gansformer/pytorch_version \\
        --styleswin /tmp/StyleSwin --stylenat /tmp/StyleNAT [--device cpu] [--size 32] [--json]

For every official checkout given (nothing of theirs is part of nat-gan), per model:

1. builds the official networks with the official constructors (seeded), writes them as the official code
   saves them (rosinality: ``torch.save`` of train.py's dict; stylegan2-ada / GANformer: ``pickle.dump`` of
   the training loop's snapshot; GANformer with ``--ganformer-default``'s settings; StyleSwin and StyleNAT:
   ``train_styleswin.py``'s ``{g, d, g_ema, g_optim, d_optim, args}``, the format of the released StyleNAT
   files too), imports that file with ``nat-gan import`` (so the importer is exercised too);
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

StyleSwin (microsoft/StyleSwin) and StyleNAT (SHI-Labs/StyleNAT, Hydra layout, ``legacy=False``) are built
as their training scripts build them: StyleSwin's args come from running the ``add_argument`` calls of its
``train_styleswin.py`` (nothing else of that script runs) with the FFHQ flags; StyleNAT's from its
``conf/runs/ffhq_256.yaml`` (kernels 3 then 7, dilations ``[1]`` up to 8 px, ``[1, res/8]`` above), cut to the
levels of ``--size``. Both discriminators are the official SWAGAN-style D with spectral norm. Their
parameters are re-drawn after the official init so that every parameter matters (the upsample ``alpha`` is
0 and the RPB tables are ~0 at init). ``--width-divisor N`` (default 8 on CPU, 1 = the official widths on
CUDA) divides the official G ``in_channels`` list and D ``channels`` dict by N, as the shared official
fixtures did (``shared/fixtures/official/README.md``): the official modules are re-executed from their own
source **in memory** with that one assignment wrapped; nothing on disk changes. Where ``timm`` is not
installed, its two helpers the official generators import (``to_2tuple``, ``trunc_normal_``) are stood in
by torch equivalents (every value they initialise is re-drawn anyway).

**StyleNAT's neighborhood attention.** The official code calls NATTEN 0.17's unfused ``na2d_qk`` /
``na2d_av`` with RPB, which natten >= 0.20 no longer has. While its code is imported and run,
``natten`` is a pure-PyTorch stand-in (``benchmarks/natten_v017.py``, written from the documented 0.17
semantics, independent of nat-gan's NA op); the previous ``sys.modules`` entries come back afterwards.
The official StyleNAT timings therefore measure the official model code around a plain stand-in NA, not
NATTEN's kernels; the result says so (``"official_na"``).

:func:`run_peers` is the importable entry point (the GPU acceptance script calls it); it returns a dict.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib.util
import inspect
import json
import math
import pickle
import sys
import tempfile
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from natgan import checkpoint
from natgan.bench.measure import BenchSettings, machine, measure_generator, measure_train_step, resolve_device
from natgan.importers import import_checkpoint
from natgan.models import get_spec

if str(Path(__file__).resolve().parent) not in sys.path:    # the sibling stand-in module, when run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import natten_v017  # noqa: E402

PEERS = ("rosinality", "stylegan2-ada", "ganformer", "styleswin", "stylenat")
NATGAN_MODEL = {"rosinality": "stylegan2", "stylegan2-ada": "stylegan2", "ganformer": "ganformer",
                "styleswin": "styleswin", "stylenat": "stylenat"}
TRANSFORMER_PEERS = ("styleswin", "stylenat")


# ------------------------------------------------------------------------------------------ official code

@contextlib.contextmanager
def official_checkout(path: str | Path, device: torch.device,
                      stand_ins: dict[str, types.ModuleType] | None = None) -> Iterator[Path]:
    """Import from ``path`` (prepended to sys.path); afterwards forget every module loaded from it.

    The checkouts share top-level names (``training``, ``torch_utils``, ``dnnlib``, ``models``, ``op``), so
    each peer gets a clean slate. On CPU, ``torch.utils.cpp_extension.load`` returns None meanwhile (see
    module docstring). ``stand_ins`` ({module name: module}) sit in ``sys.modules`` meanwhile; whatever was
    there before (e.g. an installed natten >= 0.20) is put back afterwards.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise SystemExit(f"error: {path}: not a directory (expected a checkout of the official code)")
    import torch.utils.cpp_extension as cpp

    saved_load = cpp.load
    stand_ins = stand_ins or {}
    saved_modules = {name: sys.modules.get(name) for name in stand_ins}
    if device.type == "cpu":
        cpp.load = lambda *args, **kwargs: None
    sys.modules.update(stand_ins)
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        cpp.load = saved_load
        for name, module in list(sys.modules.items()):   # before sys.path changes: namespace paths follow it
            if _loaded_from(module, root):
                del sys.modules[name]
        sys.path.remove(str(root))
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _loaded_from(module: types.ModuleType, root: Path) -> bool:
    """Whether ``module`` comes from the checkout at ``root``: by its file, or for a namespace package (StyleSwin's
    and StyleNAT's ``models/`` have no ``__init__.py``, so ``__file__`` is None) by its search path; a stale
    ``models`` package would hand the next checkout the previous one's submodules."""
    files = [getattr(module, "__file__", None) or ""]
    search = getattr(module, "__path__", None)
    if isinstance(search, list) or type(search).__name__ == "_NamespacePath":   # not torch's odd __path__ objects
        files += [str(entry) for entry in search]
    return any(str(f).startswith(str(root)) for f in files)


class _OfficialG(nn.Module):
    """The contract ``measure_generator``/``measure_train_step`` use: ``G(z)``, ``z_dim``, ``resolution``.
    ``notes``: what the result must say about how the official side ran (copied into it)."""

    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor], z_dim: int,
                 resolution: int, notes: dict[str, str] | None = None):
        super().__init__()
        self.net, self.call, self.z_dim, self.resolution = net, call, z_dim, resolution
        self.notes = dict(notes or {})

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


# ------------------------------------------------------------------------------------------ StyleSwin / StyleNAT

def styleswin_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path, *,
                   width_divisor: int = 1) -> tuple[_OfficialG, _OfficialD, Path, Callable]:
    """Official StyleSwin G/D as ``train_styleswin.py`` builds them (FFHQ flags, spectral-norm D) and the
    checkpoint that script writes."""
    from models import discriminator as official_d, generator as official_g  # noqa: E402  (the checkout)

    _narrow_channel_tables(official_g, {"Generator": "in_channels"}, width_divisor)
    _narrow_channel_tables(official_d, {"Discriminator": "channels"}, width_divisor)
    flags = ["--size", size, "--style_dim", style_dim, "--G_channel_multiplier", channel_multiplier,
             "--D_channel_multiplier", channel_multiplier, "--batch", 4, "--iter", 1_000_000, "--r1", 10,
             "--D_lr", 0.0002, "--D_sn", "--ttur", "--bcr", "--lr_decay", "--lr_decay_start_steps", 775_000]
    args = _official_parser(root / "train_styleswin.py").parse_args([str(f) for f in flags])
    # The script's own post-processing (it hard-codes n_mlp = 8; here the n_mlp the model is built with).
    args.distributed, args.latent, args.n_mlp, args.g_reg_every = False, 4096, n_mlp, 10_000_000
    torch.manual_seed(0)
    g = official_g.Generator(args.size, args.style_dim, args.n_mlp, channel_multiplier=args.G_channel_multiplier,
                             lr_mlp=args.lr_mlp, enable_full_resolution=args.enable_full_resolution,
                             use_checkpoint=args.use_checkpoint).eval()
    d = official_d.Discriminator(args.size, channel_multiplier=args.D_channel_multiplier, sn=args.D_sn).eval()
    path = _save_styleswin_format(g, d, args, workdir)
    notes = {"official_widths": _widths_note(width_divisor)}
    G = _OfficialG(g, lambda net, z: net(z)[0], style_dim, size, notes)
    return G, _OfficialD(d, lambda net, x: net(x)), path, G.call


# StyleNAT's conf/runs/ffhq_256.yaml (the official FFHQ-256 run), flattened to the StyleSwin-style field names
# its released checkpoints' ``args`` use; kernels/dilations follow its per-level pattern (see _stylenat_levels).
STYLENAT_FFHQ = {
    "block_type": "nat", "lr_mlp": 0.01, "mlp_ratio": 4, "min_heads": 4, "qkv_bias": True, "qk_scale": None,
    "proj_drop": 0.0, "attn_drop": 0.0, "use_checkpoint": False, "enable_full_resolution": 8, "G_lr": 0.00004,
    "D_lr": 0.0002, "D_sn": True, "d_reg_every": 16, "iter": 1_000_000, "batch": 8, "use_flip": True, "ttur": True,
    "r1": 10.0, "bcr": True, "bcr_fake_lambda": 10.0, "bcr_real_lambda": 10.0, "beta1": 0.0, "beta2": 0.99,
    "lr_decay": True, "lr_decay_start_steps": 775_000, "distributed": False,
}


def _stylenat_levels(size: int) -> tuple[list[list[int]], list[list[int]]]:
    """ffhq_256.yaml's kernels ``[[3], [7], [7], ...]`` and dilations ``[[1], [1], [1, 2], [1, 4], ...]``
    (``[1, res/8]`` from 16 px on), for the levels 4 .. ``size``."""
    resolutions = [4 * 2 ** i for i in range(int(math.log2(size)) - 1)]
    return ([[3] if res == 4 else [7] for res in resolutions],
            [[1] if res <= 8 else [1, res // 8] for res in resolutions])


def stylenat_pair(root: Path, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, workdir: Path, *,
                  width_divisor: int = 1) -> tuple[_OfficialG, _OfficialD, Path, Callable]:
    """Official StyleNAT G (Hydra layout) and D with the FFHQ-256 run config, saved in the released files'
    format; its NA calls go to :mod:`natten_v017` (see module docstring)."""
    from models import discriminator as official_d, generator as official_g  # noqa: E402  (the checkout)

    _narrow_channel_tables(official_g, {"Generator": "in_channels"}, width_divisor)
    _narrow_channel_tables(official_d, {"Discriminator": "channels"}, width_divisor)
    kernels, dilations = _stylenat_levels(size)
    args = argparse.Namespace(**STYLENAT_FFHQ, size=size, style_dim=style_dim, n_mlp=n_mlp, kernels=kernels,
                              dilations=dilations, channel_multiplier=channel_multiplier,
                              D_channel_multiplier=channel_multiplier)
    d_args = argparse.Namespace(channel_multiplier=channel_multiplier, sn=args.D_sn, blur_kernel=[1, 3, 3, 1],
                                ssd=False)
    torch.manual_seed(0)
    g = official_g.Generator(args, size, legacy=False).eval()
    d = official_d.Discriminator(d_args, size).eval()
    path = _save_styleswin_format(g, d, args, workdir)
    notes = {"official_widths": _widths_note(width_divisor), "official_na": natten_v017.STAND_IN_NOTE + (
        "; the official StyleNAT timings measure the official model code around this stand-in, not NATTEN's "
        "kernels")}
    G = _OfficialG(g, lambda net, z: net(z)[0], style_dim, size, notes)
    return G, _OfficialD(d, lambda net, x: net(x)), path, G.call


def _save_styleswin_format(g: nn.Module, d: nn.Module, args: argparse.Namespace, workdir: Path) -> Path:
    """Re-draw the parameters, then ``torch.save`` exactly what ``train_styleswin.py`` saves (its Adam
    optimisers, TTUR learning rates and reg-ratio betas included; never stepped, so their state is empty)."""
    _redraw_transformer(g)
    _redraw(d)
    _settle_spectral_norm(d, args.size)
    g_ratio = args.g_reg_every / (args.g_reg_every + 1) if hasattr(args, "g_reg_every") else 1.0
    d_ratio = args.d_reg_every / (args.d_reg_every + 1)
    g_lr = args.D_lr / 4 if args.ttur else args.G_lr
    g_optim = torch.optim.Adam(g.parameters(), lr=g_lr * g_ratio, betas=(args.beta1 ** g_ratio, args.beta2 ** g_ratio))
    d_optim = torch.optim.Adam(d.parameters(), lr=args.D_lr * d_ratio, betas=(args.beta1 ** d_ratio,
                                                                             args.beta2 ** d_ratio))
    path = workdir / "000000.pt"                           # the script names files by iteration, zfill(6)
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(), "g_optim": g_optim.state_dict(),
                "d_optim": d_optim.state_dict(), "args": args}, path)
    return path


def _settle_spectral_norm(d: nn.Module, size: int, iterations: int = 30) -> None:
    """Run the power iteration the way training does (one step per forward in train mode) until the stored
    ``weight_u``/``weight_v`` estimate each sigma: with the freshly drawn vectors of a new D, eval-mode sigma
    is far too small and the logits reach ~1e11, which makes absolute logit differences meaningless."""
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(7))
    d.train()
    with torch.no_grad():
        for _ in range(iterations):
            d(x)
    d.eval()


def _widths_note(divisor: int) -> str:
    return "official" if divisor == 1 else (f"official G in_channels and D channels tables // {divisor} "
                                            f"(patched in memory)")


def _official_parser(script: Path) -> argparse.ArgumentParser:
    """The script's argument parser: its ``parser.add_argument(...)`` statements, run on a fresh parser (the
    parser is built under ``if __name__ == "__main__"``; nothing else of the script runs)."""
    tree = ast.parse(script.read_text(), str(script))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
             and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "add_argument"
             and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id == "parser"]
    if not calls:
        raise SystemExit(f"error: {script}: no parser.add_argument(...) calls found")
    parser = argparse.ArgumentParser(prog=script.name)
    exec(compile(ast.Module(body=calls, type_ignores=[]), str(script), "exec"), {"parser": parser})  # noqa: S102
    return parser


def _narrow_channel_tables(module: types.ModuleType, targets: dict[str, str], divisor: int) -> None:
    """Re-run ``module``'s own source in its namespace with each ``<class>.__init__``'s ``<variable> = <table>``
    (``targets``: {class: variable}) divided by ``divisor`` (a list or a dict of widths); in memory only, the
    checkout is not touched. The official constructors keep their tables in locals, so this is the one way to
    build them narrower. One call per module: each call starts again from the file's source."""
    if divisor == 1:
        return
    path = Path(module.__file__)
    tree = ast.parse(path.read_text(), str(path))
    hits = dict.fromkeys(targets, 0)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in targets:
            for init in (f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"):
                for stmt in ast.walk(init):
                    names = [getattr(t, "id", None) for t in getattr(stmt, "targets", ())]
                    if isinstance(stmt, ast.Assign) and names == [targets[node.name]]:
                        stmt.value = ast.Call(ast.Name("_bench_peers_narrow", ast.Load()), [stmt.value], [])
                        hits[node.name] += 1
    for cls, found in hits.items():
        if found != 1:
            raise SystemExit(f"error: {path}: expected one '{targets[cls]} = ...' in {cls}.__init__, found {found}; "
                             f"use --width-divisor 1 with this version of the official code")
    module._bench_peers_narrow = lambda table: _divide_widths(table, divisor)
    exec(compile(ast.fix_missing_locations(tree), str(path), "exec"), module.__dict__)  # noqa: S102


def _divide_widths(table: list | dict, divisor: int) -> list | dict:
    if isinstance(table, dict):
        return {key: max(1, width // divisor) for key, width in table.items()}
    return [max(1, width // divisor) for width in table]


def _redraw_transformer(g: nn.Module) -> None:
    """The re-draw of the shared official fixtures (their README), so parity covers every parameter: the
    upsample ``alpha`` (0 at init) ~ U(0.5, 1), RPB tables ~ N(0, 0.5^2), ``nn.Linear``/``Conv2d`` weights
    ~ N(0, 0.25 / fan_in), LayerNorm weights 1 + N(0, 0.2^2), every bias ~ N(0, 0.1^2) (/ ``lr_mul`` for
    EqualLinear); EqualLinear weights and the constant input keep their official ``randn``."""
    gen = torch.Generator().manual_seed(1000)

    def normal(p: torch.Tensor, std: float, mean: float = 0.0) -> torch.Tensor:
        return mean + torch.randn(p.shape, generator=gen) * std

    with torch.no_grad():
        for module in g.modules():
            for name, p in module.named_parameters(recurse=False):
                if name == "alpha":
                    p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
                elif name.startswith("rpb") or name == "relative_position_bias_table" or \
                        isinstance(module, nn.ParameterList):
                    p.copy_(normal(p, 0.5))
                elif isinstance(module, nn.LayerNorm):
                    p.copy_(normal(p, 0.2, 1.0) if name == "weight" else normal(p, 0.1))
                elif isinstance(module, (nn.Linear, nn.Conv2d)) and name == "weight":
                    p.copy_(normal(p, (0.25 / p[0].numel()) ** 0.5))
                elif name == "bias":
                    p.copy_(normal(p, 0.1) / getattr(module, "lr_mul", 1.0))


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """``timm.models.layers.{to_2tuple, trunc_normal_}`` (all the official generators take from timm), for
    machines without timm; torch's ``trunc_normal_`` has timm's signature and semantics."""
    layers = types.ModuleType("timm.models.layers")
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, Iterable) and not isinstance(x, str) else (x, x)
    layers.trunc_normal_ = nn.init.trunc_normal_
    models = types.ModuleType("timm.models")
    models.layers = layers
    timm = types.ModuleType("timm")
    timm.models = models
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers}


def peer_stand_ins(peer: str) -> dict[str, types.ModuleType]:
    """The modules ``official_checkout`` stands in for ``peer``'s code (see module docstring)."""
    modules: dict[str, types.ModuleType] = {}
    if peer in TRANSFORMER_PEERS and importlib.util.find_spec("timm") is None:
        modules.update(_timm_stand_in())
    if peer == "stylenat":
        modules.update(natten_v017.stand_in_modules())
    return modules


BUILDERS = {"rosinality": rosinality_pair, "stylegan2-ada": stylegan2_ada_pair, "ganformer": ganformer_pair,
            "styleswin": styleswin_pair, "stylenat": stylenat_pair}


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
    noise = {"noise_mode": "const"} if "noise_mode" in inspect.signature(G.synthesis).parameters else {}
    with torch.no_grad():
        ours = G.synthesis(G.mapping(z), **noise)
        theirs = const(og.net, z)
        return {"max_abs_diff_image": float((ours - theirs).abs().max()),
                "max_abs_diff_d_logits": float((D(theirs) - od(theirs)).abs().max()),
                "image_std": float(theirs.std())}


def _best(rows_a: list[dict], key: str) -> dict:
    return max(rows_a, key=lambda r: -math.inf if r[key] is None else r[key])


def _train_step(G: nn.Module, D: nn.Module, settings: BenchSettings, device: torch.device, label: str
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


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def run_peers(checkouts: dict[str, str], *, device: str = "auto", size: int | None = None, style_dim: int = 512,
              n_mlp: int = 8, channel_multiplier: int = 2, batches: tuple[int, ...] = (1, 16),
              train_batch: int | None = None, warmup: int | None = None, rounds: int | None = None,
              repeat: int = 2, train: bool = True, float64: bool = True, width_divisor: int | None = None
              ) -> dict[str, Any]:
    """Parity and speed of nat-gan vs each official implementation in ``checkouts`` ({peer: path}).

    ``width_divisor``: StyleSwin/StyleNAT channel tables // this (default 8 on CPU, 1 on CUDA; see module
    docstring). Returns ``{"machine": ..., "settings": ..., "models": {peer: {...}}}``; every ratio is
    nat-gan / official.
    """
    dev = resolve_device(device)
    size = size or (256 if dev.type == "cuda" else 32)
    width_divisor = width_divisor or (1 if dev.type == "cuda" else 8)
    train_batch = train_batch or (max(batches) if dev.type == "cuda" else 4)
    settings = BenchSettings(batches=tuple(batches), warmup=warmup, rounds=rounds, precision="fp32", device=str(dev),
                             flops=False, train=train, train_batch=train_batch)
    out: dict[str, Any] = {"machine": machine(dev), "settings": {
        "size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channel_multiplier": channel_multiplier,
        "batches": list(batches), "train_batch": train_batch, "precision": "fp32", "repeat": repeat,
        "width_divisor": width_divisor}, "models": {}}
    for peer, path in checkouts.items():
        if peer not in BUILDERS:
            raise SystemExit(f"error: unknown peer '{peer}' (known: {', '.join(PEERS)})")
        extra = {"width_divisor": width_divisor} if peer in TRANSFORMER_PEERS else {}
        with official_checkout(path, dev, peer_stand_ins(peer)) as root, tempfile.TemporaryDirectory() as tmp:
            off_G, off_D, ckpt_path, const = BUILDERS[peer](root, size, style_dim, n_mlp, channel_multiplier, Path(tmp),
                                                            **extra)
            G, D = _natgan_pair(ckpt_path, peer)
            result: dict[str, Any] = {"natgan_model": NATGAN_MODEL[peer], **off_G.notes, "parity": {
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
                    step = _train_step(g, d, settings, dev, f"{peer} {who}") if train else None
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
                    "step": ours["loss"] or theirs["loss"],
                    **{f"{who}_error": row["error"] for who, row in (("natgan", ours), ("official", theirs))
                       if "error" in row}}
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
    parser.add_argument("--styleswin", help="checkout of microsoft/StyleSwin")
    parser.add_argument("--stylenat", help="checkout of SHI-Labs/StyleNAT (its NA runs on a stand-in, see above)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="resolution [256 on CUDA, 32 on CPU]")
    parser.add_argument("--style-dim", type=int, default=512)
    parser.add_argument("--n-mlp", type=int, default=8)
    parser.add_argument("--channel-multiplier", type=int, default=2)
    parser.add_argument("--width-divisor", type=int, default=None,
                        help="StyleSwin/StyleNAT channel tables // N [8 on CPU, 1 = official widths on CUDA]")
    parser.add_argument("--batch", default="1,16", help="generator batch sizes")
    parser.add_argument("--train-batch", type=int, default=None, help="[largest --batch on CUDA, 4 on CPU]")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2, help="alternate the two implementations this many times")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    checkouts = {k: v for k, v in (("rosinality", args.rosinality), ("stylegan2-ada", args.stylegan2_ada),
                                   ("ganformer", args.gansformer), ("styleswin", args.styleswin),
                                   ("stylenat", args.stylenat)) if v}
    if not checkouts:
        parser.error("give at least one official checkout (--rosinality, --stylegan2-ada, --gansformer, "
                     "--styleswin, --stylenat)")
    if args.width_divisor is not None and args.width_divisor < 1:
        parser.error(f"--width-divisor {args.width_divisor}: expected a positive integer")
    result = run_peers(checkouts, device=args.device, size=args.size, style_dim=args.style_dim, n_mlp=args.n_mlp,
                       channel_multiplier=args.channel_multiplier,
                       batches=tuple(int(b) for b in args.batch.split(",")), train_batch=args.train_batch,
                       warmup=args.warmup, rounds=args.rounds, repeat=args.repeat, train=not args.no_train,
                       width_divisor=args.width_divisor)
    print(json.dumps(result, indent=2) if args.json else _table(result))


if __name__ == "__main__":
    main()
