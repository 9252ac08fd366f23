"""Generators and discriminators, one file per architecture, all reachable through :func:`create`."""

from natgan.models.registry import (ModelPair, ModelSpec, count_params, create, get_spec, list_models, register_model,
                                    set_requires_grad)

__all__ = ["ModelPair", "ModelSpec", "count_params", "create", "get_spec", "list_models", "register_model",
           "set_requires_grad"]
