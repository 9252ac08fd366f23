"""Discriminator augmentation as one object the update rules call: ``none``, ADA, fixed-p ADA, DiffAugment.

:class:`DAugment` wraps whichever method ``train.augment`` names behind four calls: apply to a batch
D is about to see, observe D's logits on reals (the overfitting heuristic), adjust after a step, and
report/persist its state. With ``train.augment = "none"`` it returns its input unchanged (the very
same tensor), so runs without augmentation are bit-identical to before it existed.
"""

from __future__ import annotations

from typing import Any

import torch


class DAugment:
    """Identity augmentation; the base of the real ones (see :func:`natgan.train.daug_factory.build`)."""

    kind = "none"

    @classmethod
    def none(cls) -> "DAugment":
        return cls()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def observe(self, real_logits: torch.Tensor) -> None:
        """Called with D's logits on every real micro-batch of a D update."""

    def after_step(self, batch: int) -> None:
        """Called once after each training step with the global batch size."""

    def stats(self) -> dict[str, float]:
        """Scalars for the progress line, log.txt and TensorBoard (``augment/<name>``)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
