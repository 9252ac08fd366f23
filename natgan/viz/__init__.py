"""Attention-map visualisation: :func:`attention_maps` computes, :func:`render` draws.

>>> from natgan.viz import attention_maps, render
>>> result = attention_maps(G, 42, levels=[16, 32])       # or a z tensor of shape [1, z_dim]
>>> render(result, "attn/", cmap="viridis")                # sample.png, 16x16_block0.png, 16x16_overview.png, ...
"""

from natgan.viz.capture import attention_modules, capturing
from natgan.viz.colormaps import COLORMAPS
from natgan.viz.maps import DEFAULT_SEED, AttentionMaps, BlockAttention, attention_maps, mean_query_map
from natgan.viz.render import CROSS_MODES, NORMS, render

__all__ = ["COLORMAPS", "CROSS_MODES", "DEFAULT_SEED", "NORMS", "AttentionMaps", "BlockAttention",
           "attention_maps", "attention_modules", "capturing", "mean_query_map", "render"]
