"""``nat-gan bench --list``: every registered model at its default config, with parameter counts."""

from __future__ import annotations

import torch


def _shapes_only(name: str):
    """Build on the meta device: parameter shapes without allocating or initialising ~1 GB of weights.

    A builder that needs real values while constructing (say, a buffer computed from data) is simply
    built normally instead.
    """
    from natgan.models import create

    try:
        with torch.device("meta"):
            return create(name)
    except Exception:  # noqa: BLE001 - any meta-device limitation: fall back to a real build
        return create(name)


def model_table() -> list[dict]:
    """One row per registered model at its default config: name, resolution, G/D parameters."""
    from natgan.models import count_params, list_models

    rows = []
    for spec in list_models():
        pair = _shapes_only(spec.name)
        rows.append({
            "model": spec.name,
            "resolution": pair.config.resolution,
            "g_params": count_params(pair.generator),
            "d_params": count_params(pair.discriminator),
            "paper_g_params_m": spec.paper_params_g,
            "description": spec.description,
        })
    return rows
