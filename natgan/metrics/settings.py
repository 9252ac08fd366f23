"""Evaluation policy shared by `nat-gan fid` and the trainer: the recipe's eval defaults and its reference.

One home for the rules both used to spell out: a checkpoint's or recipe's ``[eval]`` section is validated
into :class:`natgan.recipe.EvalConfig` (its defaults are the defaults; old key names are accepted), and
the reference is ``eval.reference``, else ``data.path``.
"""

from __future__ import annotations

from typing import Any

from natgan import config as cfg
from natgan.recipe import EvalConfig


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
