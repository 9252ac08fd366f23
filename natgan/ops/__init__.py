"""Attention ops used by the models: 2-D (dilated) neighborhood attention with relative positional bias."""

from natgan.ops.dispatch import available_backends, neighborhood_attention

__all__ = ["available_backends", "neighborhood_attention"]
