"""Reduced-width configurations of every registered architecture family, shared by the tests that
build each model for real (training steps, the registry-wide contract), so CPU tests stay fast."""

REDUCED = {
    "stylenat": dict(resolution=16, style_dim=16, n_mlp=2, channels=[32, 32, 32], min_heads=2, kernel_size=3,
                     d_channels=[16, 16, 16]),
    "styleswin": dict(resolution=16, style_dim=16, n_mlp=2, channels=[32, 32, 32], min_heads=2,
                      d_channels=[16, 16, 16]),
    "stylegan2": dict(resolution=16, style_dim=16, n_mlp=2, channel_max=16),
    "ganformer": dict(resolution=16, components=4, latent_dim=8, channel_max=16, attn_max_res=8, mapping_layers=2),
    "hit": dict(resolution=16, low_res_stages=1, widths=[32, 16], heads=[4, 2], depths=[1, 1], block_sizes=[4],
                z_dim=16, d_channel_multiplier=1, d_max_channels=16),
}


def family(name: str) -> str:
    """The REDUCED key of a registered name (``hit-b-1024`` -> ``hit``)."""
    return next(k for k in REDUCED if name == k or name.startswith(k + "-"))


# What a family needs beyond ``num_classes`` to be class-conditional (GANformer's residual global mapping
# cannot take the wider conditional input, as in the official code).
CONDITIONAL_EXTRA = {"ganformer": dict(mapping_resnet=False)}


def reduced(name: str, num_classes: int = 0) -> dict:
    """The reduced configuration of a registered name, class-conditional when ``num_classes > 0``."""
    fam = family(name)
    config = dict(REDUCED[fam])
    if num_classes:
        config.update(CONDITIONAL_EXTRA.get(fam, {}), num_classes=num_classes)
    return config
