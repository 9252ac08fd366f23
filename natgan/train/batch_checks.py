"""Checks that tie the recipe's batch sizes to what the models need, run before any step is taken."""

from __future__ import annotations

from torch import nn

from natgan.errors import ConfigError
from natgan.models.layers import mbstd_group_size


def check_discriminator_batch(D: nn.Module, micro_batch: int) -> None:
    """Refuse a per-GPU micro-batch the discriminator's minibatch-stddev group does not divide.

    The official StyleGAN2 code asserts the same; falling back to groups of one would feed D a
    constant channel. Discriminators without the head have no ``mbstd_group`` attribute.
    """
    group = getattr(D, "mbstd_group", None)
    if group is None:
        return
    try:
        mbstd_group_size(micro_batch, group)
    except ValueError:
        raise ConfigError(f"key 'train.batch_per_gpu': the discriminator's minibatch-stddev group "
                          f"{min(group, micro_batch)} does not divide the per-GPU batch {micro_batch}; use a "
                          f"multiple of {group} (or at most {group})") from None
