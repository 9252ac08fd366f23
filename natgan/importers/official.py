"""Import official StyleNAT / StyleSwin checkpoints into nat-gan checkpoint format v1.

The official training scripts (StyleSwin's ``train_styleswin.py`` and the StyleNAT fork that produced
the released ``FFHQ256_940k_flip.pt`` / ``FFHQ1024_700k.pt``) save one dict:
``g``, ``d``, ``g_ema``, ``g_optim``, ``d_optim`` and ``args`` (a pickled ``argparse.Namespace``).

The importer

1. unpickles with ``weights_only=True`` and an allow-list of exactly ``argparse.Namespace`` (anything
   else in the file is refused, never executed);
2. rebuilds the architecture from the weight shapes (widths, heads, kernels, window sizes, depth of
   the mapping network, discriminator widths) and from ``args`` only for what shapes cannot tell
   (dilations, ``lr_mlp``, ``qk_scale``, training hyper-parameters), listing every fallback it used;
3. maps every tensor to nat-gan's module names (identical except for StyleSwin's block-level
   ``qkv``/``proj``/``attn`` which live under ``attn.`` here, and the legacy split-head ``rpb0``/``rpb1``
   which become Hydra partitions); official-only buffers are checked against what nat-gan computes and
   dropped; any other missing/unexpected key or shape mismatch is an error naming the key;
4. re-indexes the Adam states to nat-gan's parameter order and writes a v1 checkpoint with the resolved
   recipe built from the official hyper-parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable

import torch

from natgan import recipe as recipe_mod
from natgan.checkpoint import make_checkpoint
from natgan.errors import CheckpointError, ConfigError
from natgan.importers.common import (ASSUMED_GPUS, convert_optimizer, convert_state, load_official_container,
                                     parameter_sources, plain, step_from_filename, strip_module)
from natgan.models import get_spec
from natgan.models.transformer_gan import default_channels, heads_for, level_resolutions
from natgan.models.stylenat import hydra_partitions, pattern_dilations
from natgan.models.styleswin import shifted_window_mask
from natgan.models.wavelet_discriminator import default_d_channels

KINDS = ("stylenat", "styleswin")


# ------------------------------------------------------------------------------------------ loading

def _container(obj: Any, src: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{src}: not an official StyleNAT/StyleSwin checkpoint (expected a dict with "
                              f"'g_ema', got {type(obj).__name__})")
    if obj.get("format") == "nat-gan-checkpoint":
        raise CheckpointError(f"{src}: already a nat-gan checkpoint; nothing to import")
    if "state_dicts" in obj:
        obj = _from_hydra_layout(obj, src)
    if obj.get("g_ema") is None:
        raise CheckpointError(f"{src}: missing key 'g_ema' (official containers hold g, d, g_ema, g_optim, "
                              f"d_optim, args; found {', '.join(map(str, obj)) or 'nothing'})")
    out = dict(obj)
    for key in ("g", "g_ema", "d"):
        if key in out and out[key] is not None:
            out[key] = strip_module(out[key], f"{src}: key '{key}'")
    args = out.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    elif args is None:
        args = {}
    elif not isinstance(args, dict):
        raise CheckpointError(f"{src}: key 'args': expected an argparse.Namespace or dict, got {type(args).__name__}")
    out["args"] = dict(args)
    return out


# StyleNAT HEAD (src/train.py) nests its Hydra config; these are the fields the importer reads, by section.
_HYDRA_ARGS = {
    "generator": {"style_dim": "style_dim", "n_mlp": "n_mlp", "lr_mlp": "lr_mlp", "mlp_ratio": "mlp_ratio",
                  "min_heads": "min_heads", "kernels": "kernels", "dilations": "dilations", "qkv_bias": "qkv_bias",
                  "qk_scale": "qk_scale", "channel_multiplier": "channel_multiplier", "lr": "G_lr",
                  "enable_full_resolution": "enable_full_resolution"},
    "discriminator": {"channel_multiplier": "D_channel_multiplier", "lr": "D_lr", "reg_every": "d_reg_every",
                      "sn": "D_sn"},
    "training": {"iter": "iter", "batch": "batch", "use_flip": "use_flip", "ttur": "ttur", "r1": "r1", "bcr": "bcr",
                 "beta1": "beta1", "beta2": "beta2", "lr_decay": "lr_decay",
                 "lr_decay_start_steps": "lr_decay_start_steps"},
}


def _from_hydra_layout(obj: dict, src: str) -> dict:
    """The newer StyleNAT container (``state_dicts``/``optim_dicts`` + a nested config dict) -> old layout."""
    states, optims = obj.get("state_dicts"), obj.get("optim_dicts") or {}
    if not isinstance(states, dict) or not isinstance(optims, dict):
        raise CheckpointError(f"{src}: key 'state_dicts': expected a dict with g, d, g_ema")
    config = obj.get("args") or {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{src}: key 'args': expected the run's config as a dict")
    args = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for section, fields in _HYDRA_ARGS.items():
        for theirs, ours in fields.items():
            value = (config.get(section) or {}).get(theirs)
            if value is not None:
                args[ours] = value
    if isinstance(config.get("current_iteration"), int):
        args.setdefault("step", config["current_iteration"])
    return {"g": states.get("g"), "d": states.get("d"), "g_ema": states.get("g_ema"),
            "g_optim": optims.get("g_optim"), "d_optim": optims.get("d_optim"), "args": args}


# ------------------------------------------------------------------------------------------ shapes

def _shape(sd: dict[str, torch.Tensor], key: str, src: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{src}: g_ema: missing key '{key}'")
    return tuple(sd[key].shape)


def _level_count(sd: dict[str, torch.Tensor], src: str) -> int:
    found = sorted({int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))})
    if not found or found != list(range(len(found))):
        raise CheckpointError(f"{src}: g_ema: expected keys 'layers.0.*' ... 'layers.N.*', found levels {found}")
    return len(found)


def _table_kernel(shape: tuple[int, ...], key: str, src: str) -> int:
    side = shape[-1]
    if len(shape) != 3 or shape[1] != side or side % 2 == 0:
        raise CheckpointError(f"{src}: g_ema: key '{key}' has shape {shape}, expected (heads, 2k-1, 2k-1)")
    return (side + 1) // 2


def _nat_partitions(sd: dict[str, torch.Tensor], level: int, src: str) -> tuple[str, list[tuple[int, int]]]:
    """(layout, [(heads, kernel), ...]) of a level's attention, checked equal in both blocks."""
    found = []
    for block in (0, 1):
        prefix = f"layers.{level}.blocks.{block}.attn."
        if prefix + "rpb0" in sd:
            layout, keys = "split", [prefix + "rpb0", prefix + "rpb1"]
        else:
            count = sum(1 for k in sd if re.fullmatch(re.escape(prefix) + r"rpb\.\d+", k))
            if count == 0:
                raise CheckpointError(f"{src}: g_ema: missing key '{prefix}rpb.0' (or legacy '{prefix}rpb0')")
            layout, keys = "hydra", [f"{prefix}rpb.{p}" for p in range(count)]
        shapes = [_shape(sd, k, src) for k in keys]
        tables = [(shape[0], _table_kernel(shape, k, src)) for k, shape in zip(keys, shapes)]
        found.append((layout, keys, tables, shapes))
    (layout0, keys0, parts0, shapes0), (layout1, keys1, parts1, shapes1) = found
    if layout0 != layout1 or len(keys0) != len(keys1):
        raise CheckpointError(f"{src}: g_ema: blocks 0 and 1 of level {level} have different tables "
                              f"({', '.join(keys0)} vs {', '.join(keys1)})")
    for k0, k1, s0, s1 in zip(keys0, keys1, shapes0, shapes1):
        if s0 != s1:
            raise CheckpointError(f"{src}: g_ema: key '{k1}' has shape {s1}, but '{k0}' has {s0} "
                                  f"(both blocks of a level share one attention config)")
    return layout0, parts0


def _fit(channels: list[int], table: Callable[[int], list[int]], hint: Any, known: list[bool] | None = None
         ) -> tuple[int, list[int] | None]:
    """Channel multiplier reproducing ``channels`` with the official table, else the hint + explicit widths."""
    known = known or [True] * len(channels)
    hint_ok = isinstance(hint, int) and not isinstance(hint, bool) and hint >= 1
    for cm in ([hint] if hint_ok else []) + list(range(1, 9)):
        if all(a == b for a, b, k in zip(table(cm), channels, known) if k):
            return cm, None
    return (hint if hint_ok else 2), channels


def _args_levels(args: dict, key: str, levels: int, src: str) -> list[list[int]] | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) < levels:
        raise CheckpointError(f"{src}: args.{key}: expected a list with one entry per level ({levels}), got {value!r}")
    out = []
    for entry in list(value)[:levels]:
        entry = list(entry) if isinstance(entry, (list, tuple)) else [entry]
        if not entry or not all(isinstance(x, int) and not isinstance(x, bool) for x in entry):
            raise CheckpointError(f"{src}: args.{key}: expected lists of integers, got {value!r}")
        out.append(entry)
    return out


def _min_heads(channels: list[int], heads: list[int], hint: Any, src: str) -> int:
    candidates = ([hint] if isinstance(hint, int) and hint >= 1 else []) + sorted(set(heads)) + [1]
    for m in candidates:
        if all(heads_for(c, m) == h for c, h in zip(channels, heads)):
            return m
    raise CheckpointError(f"{src}: g_ema: head counts {heads} for widths {channels} do not follow the official "
                          f"rule heads = max(width // 32, min_heads)")


# ------------------------------------------------------------------------------------------ architecture

@dataclasses.dataclass
class _Plan:
    """What the importer decided: our model config + how official keys map onto ours."""

    model: dict[str, Any]
    merge_levels: set[int]            # StyleNAT levels whose rpb0/rpb1 become one partition
    split_levels: set[int]            # StyleNAT legacy levels converted to two Hydra partitions
    assumptions: list[str]


def _plan(kind: str, g: dict[str, torch.Tensor], d: dict[str, torch.Tensor] | None, args: dict, size: int | None,
          keep_split_heads: bool, src: str) -> _Plan:
    assumptions: list[str] = []
    swin_keys = any(k.endswith("relative_position_bias_table") for k in g)
    if kind == "stylenat" and swin_keys:
        raise ConfigError(f"{src}: g_ema has Swin window tables (relative_position_bias_table): a StyleSwin "
                              f"checkpoint; use --from styleswin")
    levels = _level_count(g, src)
    resolution = 4 * 2 ** (levels - 1)
    for claimed, where in ((size, "--size"), (args.get("size"), "args.size")):
        if claimed is not None and claimed != resolution:
            raise CheckpointError(f"{src}: {where} is {claimed}, but g_ema has {levels} levels "
                                  f"(4x4 ... {resolution}x{resolution})")
    style_dim, z_dim = _shape(g, "style.1.weight", src)
    if style_dim != z_dim:
        raise CheckpointError(f"{src}: g_ema: key 'style.1.weight' has shape {(style_dim, z_dim)}; "
                              f"expected a square mapping layer")
    n_mlp = sum(1 for k in g if re.fullmatch(r"style\.\d+\.weight", k))
    channels = [_shape(g, f"layers.{i}.blocks.0.norm1.style.weight", src)[0] // 2 for i in range(levels)]
    if _shape(g, "input.input", src)[1] != channels[0]:
        raise CheckpointError(f"{src}: g_ema: key 'input.input' has {_shape(g, 'input.input', src)[1]} channels, "
                              f"level 0 has {channels[0]}")
    mlp_hidden = _shape(g, "layers.0.blocks.0.mlp.fc1.weight", src)[0]
    mlp_ratio = mlp_hidden / channels[0]
    lr_mlp = args.get("lr_mlp")
    if lr_mlp is None:
        lr_mlp = 0.01
        assumptions.append("args.lr_mlp missing: used the official 0.01")
    cm_hint = args.get("channel_multiplier" if kind == "stylenat" else "G_channel_multiplier",
                       args.get("channel_multiplier"))
    cm, explicit = _fit(channels, lambda m: default_channels(resolution, m), cm_hint)
    model: dict[str, Any] = {
        "resolution": resolution, "style_dim": style_dim, "n_mlp": n_mlp, "lr_mlp": float(lr_mlp),
        "channel_multiplier": cm, "channels": explicit, "mlp_ratio": mlp_ratio,
        "qkv_bias": any(k.endswith(".qkv.bias") for k in g), "qk_scale": args.get("qk_scale"),
    }
    plan = _Plan(model, set(), set(), assumptions)
    if kind == "stylenat":
        heads = _plan_stylenat(plan, g, args, levels, keep_split_heads, src)
    else:
        heads = _plan_styleswin(plan, g, args, levels, src)
    model["min_heads"] = _min_heads(channels, heads, args.get("min_heads"), src)
    if d is not None:
        model.update(_plan_discriminator(d, resolution, args, src))
    else:
        assumptions.append("no discriminator in the file: D is freshly initialised")
    return plan


def _plan_stylenat(plan: _Plan, g: dict[str, torch.Tensor], args: dict, levels: int, keep_split_heads: bool,
                   src: str) -> list[int]:
    """Kernels from the RPB table shapes, dilations from args; legacy halves become Hydra partitions."""
    resolution = plan.model["resolution"]
    heads = [_shape(g, "layers.0.blocks.0.attn.rpb", src)[0]]
    kernels: list[list[int]] = [[3]]
    dilations: list[list[int]] = [[1]]
    arg_k = _args_levels(args, "kernels", levels, src)
    arg_d = _args_levels(args, "dilations", levels, src)
    hint = ""
    if arg_d is None:
        plan.assumptions.append("args.dilations missing: used the official FFHQ pattern ([1] at 8x8, [1, res/8] above)")
        hint = " (the file has no args.dilations; give them with --arg 'dilations=[[1], [1], [1, 2], ...]')"
    layouts = set()
    for level in range(1, levels):
        res = level_resolutions(resolution)[level]
        layout, parts = _nat_partitions(g, level, src)
        layouts.add(layout)
        shape_kernels = [k for _, k in parts]
        heads.append(sum(h for h, _ in parts))
        want_d = arg_d[level] if arg_d is not None else pattern_dilations("two_partition", res, shape_kernels[0])
        want_k = arg_k[level] if arg_k is not None else None
        if layout == "split":
            ks, ds = _legacy_halves(want_k or shape_kernels, want_d)
            if ks != shape_kernels:
                raise CheckpointError(f"{src}: g_ema: keys 'layers.{level}.blocks.0.attn.rpb0'/'rpb1' imply kernels "
                                      f"{shape_kernels}, args.kernels says {ks}")
            if keep_split_heads:
                kernels.append(ks)
                dilations.append(ds)
            elif (ks[0], ds[0]) == (ks[1], ds[1]):      # identical halves: one partition, tables concatenated
                kernels.append([ks[0]])
                dilations.append([ds[0]])
                plan.merge_levels.add(level)
            else:
                kernels.append(ks)
                dilations.append(ds)
                plan.split_levels.add(level)
            continue
        if keep_split_heads:
            raise ConfigError(f"{src}: --keep-split-heads: level {res}x{res} uses the Hydra layout (rpb.N), not "
                              f"the legacy rpb0/rpb1 halves")
        if want_k is None:
            want_k = [shape_kernels[0]] if len(set(shape_kernels)) == 1 else shape_kernels
        try:
            expected = hydra_partitions(heads[-1], want_k, want_d, f"level {res}x{res}")
        except ConfigError as exc:
            raise CheckpointError(f"{src}: args.kernels/dilations: {exc}{hint}") from None
        if [(p.heads, p.kernel) for p in expected] != parts:
            raise CheckpointError(f"{src}: g_ema: key 'layers.{level}.blocks.0.attn.rpb.0': tables {parts} "
                                  f"(heads, kernel) do not match args kernels {want_k} / dilations {want_d} at "
                                  f"{res}x{res}{hint}")
        kernels.append([p.kernel for p in expected])
        dilations.append([p.dilation for p in expected])
    if len(layouts) > 1:
        raise CheckpointError(f"{src}: g_ema: mixes legacy rpb0/rpb1 and Hydra rpb.N tables")
    plan.model.update({"dilations": dilations, "head_layout": "split" if keep_split_heads else "hydra"})
    same = {k for entry in kernels[1:] for k in entry}
    if len(same) == 1:
        plan.model["kernel_size"] = same.pop()          # one kernel everywhere: no per-level list needed
    else:
        plan.model["kernels"] = kernels
    return heads


def _plan_styleswin(plan: _Plan, g: dict[str, torch.Tensor], args: dict, levels: int, src: str) -> list[int]:
    """Heads and window sizes from the Swin tables; the full-resolution threshold from args or the windows."""
    heads, windows = [], []
    for level in range(levels):
        prefix = f"layers.{level}.blocks.0."
        if any(k.startswith(prefix + "attn.rpb") for k in g):
            raise ConfigError(f"{src}: g_ema: key '{prefix}attn.rpb...' is a StyleNAT table; use --from stylenat")
        key = prefix + "attn.0.relative_position_bias_table"
        rows, half = _shape(g, key, src)
        window = (math.isqrt(rows) + 1) // 2
        if (2 * window - 1) ** 2 != rows:
            raise CheckpointError(f"{src}: g_ema: key '{key}' has {rows} rows, not (2w-1)^2 for any window w")
        heads.append(2 * half)
        windows.append(window)
    resolutions = level_resolutions(plan.model["resolution"])
    partial = [w for w, r in zip(windows, resolutions) if w < r]
    window_size = partial[0] if partial else 8
    if any(w != window_size for w in partial):
        raise CheckpointError(f"{src}: g_ema: window sizes {windows} are not one window size")
    full = args.get("enable_full_resolution")
    if not isinstance(full, int):
        full = max([r for w, r in zip(windows, resolutions) if w == r] + [4])
    plan.model.update({"window_size": window_size, "full_resolution": int(full)})
    return heads


def _legacy_halves(kernels: list[int], dilations: list[int]) -> tuple[list[int], list[int]]:
    """Official split-head rules: broadcast, duplicate a single entry, use only the first two."""
    if len(kernels) == 1 and len(dilations) > 1:
        kernels = kernels * len(dilations)
    if len(dilations) == 1 and len(kernels) > 1:
        dilations = dilations * len(kernels)
    if len(kernels) == 1:
        kernels, dilations = kernels * 2, dilations * 2
    return list(kernels[:2]), list(dilations[:2])


def _plan_discriminator(d: dict[str, torch.Tensor], resolution: int, args: dict, src: str) -> dict[str, Any]:
    sn = any(k.endswith("weight_orig") for k in d)
    w = "weight_orig" if sn else "weight"
    log_size = int(math.log2(resolution)) - 1
    n_convs = sum(1 for k in d if re.fullmatch(rf"convs\.\d+\.conv2\.1\.{w}", k))
    if n_convs != log_size - 2:
        raise CheckpointError(f"{src}: d: {n_convs} conv blocks, a {resolution}x{resolution} discriminator "
                              f"has {log_size - 2}")
    res_list = level_resolutions(resolution)
    widths = {resolution: _d_shape(d, f"from_rgbs.0.conv.0.{w}", src)[0]}
    for j in range(n_convs):
        widths[2 ** (log_size - j - 1)] = _d_shape(d, f"convs.{j}.conv2.1.{w}", src)[0]
    known = [r in widths for r in res_list]
    filled = [widths.get(r, widths[resolution]) for r in res_list]
    cm, explicit = _fit(filled, lambda m: default_d_channels(resolution, m), args.get("D_channel_multiplier"), known)
    return {"d_channel_multiplier": cm, "d_channels": explicit, "d_sn": sn}


def _d_shape(d: dict[str, torch.Tensor], key: str, src: str) -> tuple[int, ...]:
    if key not in d:
        raise CheckpointError(f"{src}: d: missing key '{key}'")
    return tuple(d[key].shape)


# ------------------------------------------------------------------------------------------ key mapping

def _generator_rename(kind: str, plan: _Plan) -> Callable[[str], Any]:
    """official key -> our key, (our key, part) for tables merged along heads, or None (known buffer)."""

    def rename(key: str) -> Any:
        if key.endswith("sin_pos_embed._float_tensor"):
            return None                                   # dtype carrier of the official SPE, value undefined
        if kind == "styleswin":
            if key.endswith(".attn_mask2"):
                return None                               # verified separately, recomputed compactly
            return re.sub(r"^(layers\.\d+\.blocks\.\d+\.)(qkv|proj|attn)\.", r"\1attn.\2.", key)
        m = re.fullmatch(r"(layers\.(\d+)\.blocks\.\d+\.attn\.)rpb([01])", key)
        if m:
            level, half = int(m.group(2)), int(m.group(3))
            if level in plan.merge_levels:
                return (m.group(1) + "rpb.0", half)
            if level in plan.split_levels:
                return m.group(1) + f"rpb.{half}"
        return key

    return rename


def _check_swin_masks(official: dict[str, torch.Tensor], plan: _Plan, src: str, which: str) -> None:
    resolution = plan.model["resolution"]
    for key, value in official.items():
        m = re.fullmatch(r"layers\.(\d+)\.blocks\.\d+\.attn_mask2", key)
        if not m:
            continue
        res = level_resolutions(resolution)[int(m.group(1))]
        window = plan.model["window_size"]
        if res <= window or res <= plan.model["full_resolution"]:
            raise CheckpointError(f"{src}: {which}: unexpected key '{key}' (level {res}x{res} is not shifted)")
        if not torch.equal(value.float(), shifted_window_mask(res, window, window // 2)):
            raise CheckpointError(f"{src}: {which}: buffer '{key}' is not the shifted-window mask nat-gan computes")


# ------------------------------------------------------------------------------------------ recipe

def _recipe(kind: str, model: dict[str, Any], args: dict, assumptions: list[str]) -> dict[str, Any]:
    """The resolved recipe of the official run (its training hyper-parameters), as a plain dict."""
    defaults = recipe_mod.TrainConfig()
    per_gpu = args.get("batch")
    if per_gpu is not None and not (isinstance(per_gpu, int) and not isinstance(per_gpu, bool) and per_gpu >= 1):
        raise CheckpointError(_bad_arg("batch", "a positive int", per_gpu))
    if per_gpu is not None:
        gpus = ASSUMED_GPUS if args.get("distributed") else 1
        if args.get("distributed"):
            assumptions.append(f"args.batch = {per_gpu} per GPU; assumed {ASSUMED_GPUS} GPUs as in the papers "
                               f"(global batch {per_gpu * gpus})")
        batch = {"batch": per_gpu * gpus, "batch_per_gpu": per_gpu}
    else:
        batch = {}
    pick = {
        "iterations": ("iter", int), "g_lr": ("G_lr", float), "d_lr": ("D_lr", float), "ttur": ("ttur", bool),
        "beta1": ("beta1", float), "beta2": ("beta2", float), "r1": ("r1", float), "r1_every": ("d_reg_every", int),
        "bcr": ("bcr", bool), "bcr_real": ("bcr_real_lambda", float), "bcr_fake": ("bcr_fake_lambda", float),
        "lr_decay": ("lr_decay", bool), "lr_decay_start": ("lr_decay_start_steps", int),
        "checkpoint_every": ("save_freq", int), "log_every": ("print_freq", int),
    }
    train: dict[str, Any] = dict(batch)
    for ours, (theirs, tp) in pick.items():
        value = args.get(theirs)
        if value is None:
            continue
        is_bool = isinstance(value, bool)
        if is_bool != (tp is bool) or not isinstance(value, (int, float)) or (tp is int and isinstance(value, float)):
            expected = {int: "an int", float: "a number", bool: "true or false"}[tp]
            raise CheckpointError(_bad_arg(theirs, expected, value))
        train[ours] = tp(value)
    # Official code: D grad-norm clip 5, EMA 0.5^(32/10k), no style mixing / path-length, fp32 + TF32.
    train.update({"d_clip": 5.0, "ema_beta": defaults.ema_beta, "style_mixing": 0.0, "pl_weight": 0.0,
                  "precision": "tf32", "seed": int(args["seed"]) if isinstance(args.get("seed"), int) else 0})
    iterations = train.get("iterations", defaults.iterations)
    if train.get("lr_decay", defaults.lr_decay) and train.get("lr_decay_start", defaults.lr_decay_start) > iterations:
        assumptions.append(f"args.lr_decay_start_steps > args.iter: decay start clamped to {iterations}")
        train["lr_decay_start"] = iterations
    data = {"path": "", "flip": bool(args.get("use_flip", False))}
    evaluation: dict[str, Any] = {"mode": "legacy_pytorch"}
    if isinstance(args.get("eval_freq"), int):
        evaluation["every"] = args["eval_freq"]
    if isinstance(args.get("val_num_batches"), int) and isinstance(args.get("val_batch_size"), int):
        evaluation["num"] = max(2, args["val_num_batches"] * args["val_batch_size"])
    raw = {"model": {"name": kind, **model}, "data": data, "train": train, "eval": evaluation}
    try:
        return recipe_mod.from_dict(raw, source="official args").to_dict()
    except ConfigError as exc:
        raise CheckpointError(f"cannot express the official training settings as a recipe: {exc}") from None


def _bad_arg(name: str, expected: str, value: Any) -> str:
    """An official ``args`` field nat-gan cannot use: refuse rather than silently substitute a default."""
    return (f"official args.{name}: expected {expected}, got {value!r}; correct it with --arg {name}=VALUE "
            f"(the value the run really used)")


# ------------------------------------------------------------------------------------------ entry point

def import_official(source: str | Path | dict, kind: str = "stylenat", size: int | None = None, *,
                    keep_split_heads: bool = False, step: int | None = None,
                    args_override: dict[str, Any] | None = None) -> dict[str, Any]:
    """Convert an official StyleNAT/StyleSwin checkpoint (path or already loaded dict) to a v1 checkpoint dict.

    ``kind``: "stylenat" or "styleswin". ``size``: expected output resolution (checked against the
    weights). ``keep_split_heads``: keep StyleNAT's legacy ``rpb0``/``rpb1`` layout instead of Hydra
    partitions. ``args_override``: replaces fields of the official ``args`` (e.g. ``dilations`` when a
    file lacks them). The result loads with :func:`natgan.checkpoint.load` once saved.
    """
    if kind not in KINDS:
        raise ConfigError(f"--from {kind}: expected one of {', '.join(KINDS)}")
    if isinstance(source, dict):
        src, container = "<dict>", source
    else:
        src, container = str(source), load_official_container(source)
    ck = _container(container, src)
    args = {**ck["args"], **(args_override or {})}
    g_ema, g, d = ck["g_ema"], ck.get("g"), ck.get("d")
    plan = _plan(kind, g_ema, d, args, size, keep_split_heads, src)
    spec = get_spec(kind)
    try:
        config = spec.make_config(plan.model, source=f"{src} (rebuilt architecture)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    model_cfg = dataclasses.asdict(config)
    generator, discriminator = spec.builder(config)
    rename = _generator_rename(kind, plan)

    weights: dict[str, Any] = {}
    if kind == "styleswin":
        _check_swin_masks(g_ema, plan, src, "g_ema")
    weights["G_ema"] = convert_state(g_ema, generator, rename, src, "g_ema")
    if g is not None:
        weights["G"] = convert_state(g, generator, rename, src, "g")
    else:
        plan.assumptions.append("no 'g' in the file: the training generator starts as a copy of g_ema")
        weights["G"] = weights["G_ema"]
    if d is not None:
        weights["D"] = convert_state(d, discriminator, lambda k: k, src, "d")

    optim: dict[str, Any] = {}
    if ck.get("g_optim") is not None:
        sources = parameter_sources(g if g is not None else g_ema, generator, rename)
        optim["G"] = convert_optimizer(ck["g_optim"], sources, generator, src, "g_optim")
    if ck.get("d_optim") is not None and d is not None:
        sources = parameter_sources(d, discriminator, lambda k: k)
        optim["D"] = convert_optimizer(ck["d_optim"], sources, discriminator, src, "d_optim")

    recipe = _recipe(kind, model_cfg, args, plan.assumptions)
    if step is None and isinstance(args.get("step"), int):
        step = args["step"]
    if step is None:
        step = step_from_filename(src) if not isinstance(source, dict) else None
        if step is None:
            plan.assumptions.append("training step unknown (not in the file name): recorded as 0")
            step = 0
    info = {
        "source": src, "from": kind, "official_keys": sorted(map(str, container)),
        "layout": _layout_note(kind, plan, keep_split_heads), "assumptions": list(plan.assumptions),
        "official_args": plain(args),
    }
    return make_checkpoint(model_name=kind, model_config=model_cfg, recipe=recipe,
                           normalization=generator.normalization, G=weights["G"], G_ema=weights["G_ema"],
                           D=weights.get("D"), optim=optim, step=step,
                           images_seen=step * recipe["train"]["batch"], extra={"import": info})


def _layout_note(kind: str, plan: _Plan, keep_split_heads: bool) -> str:
    if kind == "styleswin":
        return "StyleSwin blocks: qkv/proj/attn.{0,1} moved under attn."
    if keep_split_heads:
        return "legacy split-head layout kept (rpb0/rpb1)"
    if plan.merge_levels or plan.split_levels:
        return "legacy split-head rpb0/rpb1 converted to Hydra rpb.N (identical halves merged along heads)"
    return "Hydra layout (rpb.N), name for name"
