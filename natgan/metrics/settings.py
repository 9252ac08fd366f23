"""Evaluation policy shared by `nat-gan fid` and the trainer: the recipe's eval defaults and its reference.

One home for the rules both used to spell out: a checkpoint's or recipe's ``[eval]`` section is validated
into :class:`EvalConfig` (its defaults are the defaults; old key names are accepted), and the reference is
``eval.reference``, else ``data.path``. :class:`EvalConfig` lives here, not in :mod:`natgan.recipe`, so that
metrics never import the recipe layer above them (the recipe's ``[eval]`` section is this type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from natgan import config as cfg
from natgan.config import option

FidMode = Literal["clean", "legacy_pytorch", "legacy_tensorflow"]


@dataclass
class EvalConfig:
    """Periodic metrics during training, and the defaults `nat-gan fid` uses for this run."""

    every: int = option(0, min=0, help="steps between evaluations (0 = never)")
    num: int = option(50_000, min=2, help="generated images per evaluation")
    mode: FidMode = option("legacy_pytorch", help="clean-fid mode (legacy_pytorch = the papers' protocol)")
    reference: str = option("", help="reference dataset (default: data.path) or a clean-fid statistics name")
    metrics: list[str] = option(["fid"], help="registered metrics: fid, kid, pr, dc, is (natgan.metrics.registry)")
    pr_features: Literal["vgg16", "inception"] = option("vgg16", help="features of pr and dc")
    noise_mode: Literal["random", "const", "none"] = option(
        "random", help="noise inputs of StyleGAN2/GANformer during metrics: random (the published protocol, drawn "
                       "from the seeds) | const (the stored maps, as `sample`) | none")
    batch_per_device: int = option(64, min=1, aliases=("batch",),
                                   help="images per generator/extractor forward pass on the one evaluating device "
                                        "(not a global batch like train.batch; old name: eval.batch)")

    def validate(self) -> None:
        from natgan.metrics.registry import parse_metrics

        self.metrics = parse_metrics(self.metrics, source="key 'eval.metrics'")


def eval_config(recipe: dict | None, *, source: str = "checkpoint recipe") -> EvalConfig:
    """The ``[eval]`` section of a recipe dict (e.g. a checkpoint's ``recipe``), defaults filled in."""
    return cfg.build(EvalConfig, dict((recipe or {}).get("eval") or {}), section="eval", source=source)


def default_reference(recipe: dict | None) -> tuple[str, str] | None:
    """(value, key) of the reference a recipe names: ``eval.reference``, else ``data.path``; None if neither."""
    for section, key in (("eval", "reference"), ("data", "path")):
        value = ((recipe or {}).get(section) or {}).get(key)
        if value:
            return str(value), f"{section}.{key}"
    return None


def evaluation_kwargs(ev: EvalConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`natgan.metrics.runner.evaluate_generator` that ``ev`` decides."""
    return {"metrics": list(ev.metrics), "num": ev.num, "mode": ev.mode, "batch_size": ev.batch_per_device,
            "pr_features": ev.pr_features, "noise_mode": ev.noise_mode}
