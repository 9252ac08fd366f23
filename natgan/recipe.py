"""Recipes: TOML files with ``[model]``, ``[data]``, ``[train]`` and ``[eval]`` validated into dataclasses.

A recipe is the whole description of a run. The resolved recipe (file + ``--set`` overrides + defaults)
is printed by ``train --dry-run`` and stored in every checkpoint, so a checkpoint always says exactly
what produced it.
"""

from __future__ import annotations

import copy
import re
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from natgan import config as cfg
from natgan.config import option
from natgan.errors import ConfigError
from natgan.limits import MAX_DEPTH, check_untrusted
from natgan.metrics.settings import EvalConfig

MAX_RECIPE_BYTES = 1 << 20  # recipes are a few kB; a 10 GiB "recipe" is refused before reading it


@dataclass
class DataConfig:
    """Where training images come from and how they are fed."""

    path: str = option("", help="dataset (LMDB from `nat-gan prepare`, image folder or zip); --data overrides")
    flip: bool = option(True, help="random horizontal flips (StyleNAT FFHQ: on; StyleSwin FFHQ: off)")
    workers: int = option(2, min=0, max=256, help="DataLoader worker processes per GPU")


@dataclass
class TrainConfig:
    """The GAN training algorithm (defaults: the official StyleNAT FFHQ-256 run, see recipes/ffhq256.toml)."""

    batch: int = option(64, min=1, help="global batch (all GPUs together)")
    batch_per_gpu: Optional[int] = option(None, min=1, help="micro-batch per GPU; gradient accumulation fills the rest")
    iterations: int = option(1_000_000, min=1, help="optimizer steps")
    g_lr: float = option(2e-4, min=0.0, help="generator lr (ignored when ttur = true)")
    d_lr: float = option(2e-4, min=0.0, help="discriminator lr")
    ttur: bool = option(True, help="two time-scale update rule: G lr = d_lr / 4 (official code)")
    beta1: float = option(0.0, min=0.0, max=1.0)
    beta2: float = option(0.99, min=0.0, max=1.0)
    r1: float = option(10.0, min=0.0, help="R1 gamma")
    r1_every: int = option(16, min=1, help="lazy R1 interval (1 = every step, as HiT)")
    bcr: bool = option(True, help="balanced consistency regularisation")
    bcr_real: float = option(10.0, min=0.0)
    bcr_fake: float = option(10.0, min=0.0)
    d_clip: float = option(5.0, min=0.0, help="clip D gradient norm after its main step (0 = off)")
    augment: Literal["none", "ada", "fixed", "diffaug"] = option(
        "none", help="augment every image D sees: ada (adaptive p, Karras et al. 2020), fixed (ADA at augment_p), "
                     "diffaug (DiffAugment, Zhao et al. 2020)")
    augment_pipe: str = option("bgc", help="ADA pipeline: blit, geom, color, bg, gc, bgc")
    augment_p: float = option(0.0, min=0.0, max=1.0, help="ADA probability (fixed), or its start (ada)")
    ada_target: float = option(0.6, min=0.0, max=1.0, help="ADA target of r_t = E[sign(D(real))]")
    ada_interval: int = option(4, min=1, help="steps between ADA p adjustments")
    ada_kimg: float = option(500.0, min=1e-3, help="thousands of images for p to move from 0 to 1")
    ada_resample: Literal["official", "exact"] = option(
        "official", help="ADA geometric resampling: official (stylegan2-ada-pytorch's filter chain, blits "
                         "filtered too) | exact (exact blits, filter delay compensated; closer to the ideal "
                         "transform)")
    diffaug_policy: str = option("color,translation,cutout", help="DiffAugment groups, applied in this order")
    freeze_d: int = option(0, min=0, help="Freeze-D: keep D's first N resolution levels (from the input) fixed")
    freezed: int = option(0, min=0, help="Freeze-D in stylegan2-ada-pytorch's unit (its --freezed): D's first N "
                                         "layers (fromrgb, then conv0, conv1, skip per level; 3L+1 = L levels)")
    ema_beta: float = option(0.5 ** (32 / 10_000), min=0.0, max=1.0, help="EMA decay per step (official 0.5^(32/10k))")
    ema_start: int = option(0, min=0, help="G_ema copies G up to this step and averages after it (HiT: 10; "
                                            "0 = average from the first step, as StyleNAT/StyleGAN2)")
    ema_buffers: Literal["copy", "average"] = option("copy", help="BatchNorm statistics etc.: copied into G_ema, "
                                                                  "or averaged like weights (HiT)")
    update: Literal["alternating", "simultaneous"] = option(
        "alternating", help="alternating: D step, then G step on fresh latents (StyleGAN2/StyleNAT); "
                            "simultaneous: one forward, G and D updated from the same logits, R1 inside "
                            "the D loss (HiT)")
    lr_decay: bool = option(True, help="linear lr decay to 0 from lr_decay_start to iterations")
    lr_decay_start: int = option(775_000, min=0)
    style_mixing: float = option(0.0, min=0.0, max=1.0, help="style-mixing probability (StyleGAN2: 0.9)")
    pl_weight: float = option(0.0, min=0.0, help="path-length regularisation weight (StyleGAN2: 2)")
    g_reg_every: int = option(4, min=1, help="lazy path-length interval")
    seed: int = option(0, min=0, max=2 ** 48, help="run seed (per-stream seeds are derived from it)")
    precision: Literal["fp32", "tf32", "bf16"] = option("tf32", help="tf32 = fp32 weights with TF32 matmuls (papers)")
    activation_checkpointing: bool = option(False)
    checkpoint_every: int = option(25_000, min=1, help="steps between checkpoints")
    keep_checkpoints: int = option(3, min=1, help="numbered checkpoints kept besides latest.pt")
    sample_every: int = option(5_000, min=1, help="steps between sample grids")
    log_every: int = option(100, min=1, help="steps between log lines / TensorBoard scalars")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    keep_best: Optional[str] = option(None, help="keep best.pt for this eval output (e.g. \"fid\", \"precision\"); "
                                                 "needs eval.every > 0 and the metric in eval.metrics")

    def validate(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"key 'train.device': expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_per_gpu is not None and self.batch_per_gpu > self.batch:
            raise ConfigError(f"key 'train.batch_per_gpu': expected int <= train.batch ({self.batch}), "
                              f"got {self.batch_per_gpu}")
        if self.update == "simultaneous" and self.pl_weight > 0:
            raise ConfigError("key 'train.pl_weight': path-length regularisation needs train.update = "
                              "'alternating' (its lazy G step has no place in a simultaneous update)")
        if self.freeze_d and self.freezed:
            raise ConfigError(f"key 'train.freezed': give train.freeze_d (levels, {self.freeze_d}) or train.freezed "
                              f"(stylegan2-ada-pytorch's layer count, {self.freezed}), not both")
        if self.augment in ("ada", "fixed"):
            from natgan.augment.ada_pipe import pipeline

            pipeline(self.augment_pipe)
        if self.augment == "diffaug":
            from natgan.augment.diffaugment import parse_policy

            parse_policy(self.diffaug_policy)
        if self.lr_decay and self.lr_decay_start > self.iterations:
            raise ConfigError(f"key 'train.lr_decay_start': expected int <= train.iterations "
                              f"({self.iterations}), got {self.lr_decay_start}")


@dataclass
class Recipe:
    """A fully validated recipe. ``model`` is the architecture's own config dataclass."""

    model_name: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML- and ``weights_only``-safe); :func:`from_dict` inverts it."""
        return {
            "model": {"name": self.model_name, **dataclasses.asdict(self.model)},
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}


def from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Recipe:
    """Validate a raw recipe dict; every error names ``source`` and the dotted key."""
    from natgan.models.registry import get_spec

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of sections, got {type(data).__name__}")
    for key in data:
        if key not in ("model", *SECTIONS):
            raise ConfigError(f"{source}: unknown section '[{key}]'; valid sections: model, data, train, eval")
    model = data.get("model")
    if not isinstance(model, dict) or "name" not in model:
        raise ConfigError(f"{source}: missing key 'model.name' (expected str: a registered model)")
    if not isinstance(model["name"], str):
        raise ConfigError(f"{source}: key 'model.name': expected str, got {model['name']!r}")
    try:
        spec = get_spec(model["name"])
    except ConfigError as exc:
        raise ConfigError(f"{source}: key 'model.name': {exc}") from None
    model_cfg = spec.make_config({k: v for k, v in model.items() if k != "name"}, source=source)
    sections = {name: cfg.build(cls, data.get(name, {}), section=name, source=source)
                for name, cls in SECTIONS.items()}
    _check_keep_best(sections["train"], sections["eval"], source)
    if sections["eval"].every:  # evaluated during training: refused now, not at the first evaluation
        from natgan.metrics.registry import check_conditional

        check_conditional(sections["eval"].metrics, int(getattr(model_cfg, "num_classes", 0) or 0),
                          f"{source}: key 'eval.metrics': ")
    return Recipe(model_name=spec.name, model=model_cfg, source=source, **sections)


def _check_keep_best(train: TrainConfig, ev: EvalConfig, source: str) -> None:
    """``train.keep_best`` names an output of a metric that ``eval.metrics`` computes every ``eval.every``."""
    if train.keep_best is None:
        return
    from natgan.metrics.registry import metric_of_output, outputs

    keys = [k for k, o in outputs().items() if o.better != "none"]
    metric = metric_of_output(train.keep_best)
    if metric is None or train.keep_best not in keys:
        raise ConfigError(f"{source}: key 'train.keep_best': expected one of {', '.join(keys)}, "
                          f"got {train.keep_best!r}")
    if metric.name not in ev.metrics:
        raise ConfigError(f"{source}: key 'train.keep_best': '{train.keep_best}' comes from metric '{metric.name}', "
                          f"which eval.metrics ({', '.join(ev.metrics)}) does not compute")
    if not ev.every:
        raise ConfigError(f"{source}: key 'train.keep_best': needs periodic evaluation (eval.every > 0)")


def parse_override(expr: str) -> tuple[list[str], Any]:
    """``"train.batch=16"`` -> (["train", "batch"], 16). Values are TOML literals; bare words are strings."""
    if "=" not in expr:
        raise ConfigError(f"--set {expr}: expected KEY=VALUE, e.g. --set train.batch=16")
    key, raw = expr.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if len(path) != 2 or not all(path):
        raise ConfigError(f"--set {expr}: expected SECTION.KEY=VALUE with SECTION one of model, data, train, eval")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:
        value = None
    if value is None:
        raise ConfigError(f"--set {key.strip()}=...: the value is nested more than {MAX_DEPTH} levels deep")
    check_untrusted(value, f"--set {key.strip()}=...", error=ConfigError)
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str], *, base_source: str) -> Recipe:
    """Apply every ``--set`` to ``raw``, then validate the result once.

    Validating once, after all overrides, makes the outcome independent of their order (``--set
    train.iterations=1000 --set train.lr_decay_start=500`` and the reverse both work); an error about a
    key that an override set names that override."""
    data = copy.deepcopy(raw) if isinstance(raw, dict) else raw
    applied: list[tuple[str, str]] = []
    for expr in overrides:
        path, value = parse_override(expr)
        section, key = path
        if section not in ("model", *SECTIONS):
            raise ConfigError(f"--set {expr}: unknown section '{section}'; valid sections: model, data, train, eval")
        if not isinstance(data, dict) or not isinstance(data.setdefault(section, {}), dict):
            break  # the recipe itself is malformed: from_dict below says how
        data[section][key] = value
        applied.append((expr, f"{section}.{key}"))
    try:
        recipe = from_dict(data, source=base_source)
    except ConfigError as exc:
        message = str(exc)
        culprit = next((expr for expr, key in reversed(applied) if f"'{key}'" in message), None)
        if culprit is None or not message.startswith(f"{base_source}: "):
            raise
        raise ConfigError(f"--set {culprit}: {message.removeprefix(f'{base_source}: ')}") from None
    return recipe


def load(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file with optional ``--set`` overrides."""
    return apply_overrides(read_raw(path), overrides or [], base_source=str(path))


def read_raw(path: str | Path) -> dict[str, Any]:
    """A recipe file's TOML as a plain dict, not yet validated (one-line errors for unreadable files)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes is not a recipe (recipes are a few kB; the limit is "
                              f"{MAX_RECIPE_BYTES:,})")
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep (not a recipe)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
    check_untrusted(raw, str(path), error=ConfigError)
    return raw


def dump_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for recipe dicts (tables of scalars and nested lists); None is omitted."""
    lines: list[str] = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


# TOML basic strings: these escapes, and \\uXXXX for every other control character (a raw newline in a
# string would make the recipe.toml nat-gan writes invalid TOML)
_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                             for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")
