"""Which model a command builds from a name, a recipe, ``--set`` and ``--resolution`` (bench, visualize).

Every route goes through :mod:`natgan.recipe`, so a typo in ``--set model.kernel_sizes=...`` fails
with the same one-line message as in ``nat-gan train``.
"""

from __future__ import annotations

from typing import Any

from natgan import recipe as recipes
from natgan.errors import ConfigError
from natgan.models import ModelPair, create, get_spec


def model_overrides(sets: list[str] | None, resolution: int | None) -> list[str]:
    """``--resolution R`` is ``--set model.resolution=R`` placed first, so explicit ``--set`` wins."""
    return ([f"model.resolution={resolution}"] if resolution is not None else []) + list(sets or [])


def resolve_config(name: str | None, *, recipe: str | None = None, sets: list[str] | None = None,
                   resolution: int | None = None) -> tuple[str, Any]:
    """The validated ``(model name, model config)`` for ``name`` and/or ``recipe`` with overrides applied.

    With a recipe and no name, the recipe's model is used; with both, they must agree. Nothing is built,
    so several models can be checked before any of them costs time.
    """
    overrides = model_overrides(sets, resolution)
    for expr in overrides:
        path, _ = recipes.parse_override(expr)
        if path[0] != "model":
            raise ConfigError(f"--set {expr}: only model.* keys change a benchmark or visualisation")
    if recipe is not None:
        rec = recipes.load(recipe, overrides)
        if name is not None and get_spec(name).name != rec.model_name:
            raise ConfigError(f"--model {name}: recipe {recipe} describes model '{rec.model_name}'")
        return rec.model_name, rec.model
    if name is None:
        raise ConfigError("give a model: --model NAME (see `nat-gan bench --list`) or --recipe FILE")
    spec = get_spec(name)
    rec = recipes.apply_overrides({"model": {"name": spec.name}}, overrides, base_source=f"model '{spec.name}'")
    return spec.name, rec.model


def resolve_model(name: str | None, *, recipe: str | None = None, sets: list[str] | None = None,
                  resolution: int | None = None) -> ModelPair:
    """A freshly initialised (G, D) pair, see :func:`resolve_config`."""
    model_name, config = resolve_config(name, recipe=recipe, sets=sets, resolution=resolution)
    return create(model_name, config=config)


def parse_int_list(text: str, option: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` with a clear error for anything else."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise ConfigError(f"{option}: expected comma-separated integers, got '{text}'") from None
    if not values:
        raise ConfigError(f"{option}: expected comma-separated integers, got '{text}'")
    return values
