"""What the StyleSwin and StyleNAT peers share: ``train_styleswin.py``'s checkpoint format, its argument parser,
in-memory narrowing of the official channel tables, the fixtures' re-draw, and a ``timm`` stand-in.
"""

from __future__ import annotations

import argparse
import ast
import types
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from natgan.models.spectral_norm import settle
from peers.official import redraw


def save_styleswin_format(g: nn.Module, d: nn.Module, args: argparse.Namespace, workdir: Path) -> Path:
    """Re-draw the parameters, then ``torch.save`` exactly what ``train_styleswin.py`` saves (its Adam
    optimisers, TTUR learning rates and reg-ratio betas included; never stepped, so their state is empty)."""
    _redraw_transformer(g)
    redraw(d)
    settle(d, 30)  # a fresh D's eval logits are ~1e11 (natgan.models.spectral_norm): settle as 30 training steps
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


def widths_note(divisor: int) -> str:
    return "official" if divisor == 1 else (f"official G in_channels and D channels tables // {divisor} "
                                            f"(patched in memory)")


def official_parser(script: Path) -> argparse.ArgumentParser:
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


def narrow_channel_tables(module: types.ModuleType, targets: dict[str, str], divisor: int) -> None:
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


def timm_stand_in() -> dict[str, types.ModuleType]:
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
