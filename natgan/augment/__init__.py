"""Augmentation: the discriminator augmentation the update rules call (``none``, ADA, fixed-p ADA, DiffAugment).

This package's face is the dispatcher below; each method lives in a module named after it:
:mod:`~natgan.augment.bcr` (bCR's operations and the dataset flip), :mod:`~natgan.augment.diffaugment`,
:mod:`~natgan.augment.ada_pipe` (ADA's augmentations), :mod:`~natgan.augment.ada_resample` (its
anti-aliased geometric resampling) and :mod:`~natgan.augment.ada_controller` (the r_t heuristic and p).

:class:`DAugment` wraps whichever method ``train.augment`` names behind five calls: apply to a batch D
is about to see, observe D's logits on reals (the overfitting heuristic), adjust after a step, report
and persist its state. With ``train.augment = "none"`` it returns its input unchanged (the very same
tensor), so runs without augmentation are bit-identical to before augmentation existed.

The papers define their augmentations on RGB in [-1, 1]; StyleNAT/StyleSwin models live in
ImageNet-normalised space, so images are mapped to [-1, 1] and back around the augmentation (a per-channel
affine map, skipped for models that already use [-1, 1]). Random numbers come from the trainer's
checkpointed ``aug`` generator, so ``--resume`` stays bit-exact, on every rank.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from natgan.augment import bcr
from natgan.augment.ada_controller import AdaController
from natgan.augment.ada_pipe import AugmentPipe
from natgan.augment.diffaugment import diff_augment, parse_policy

__all__ = ["AdaAugment", "DAugment", "DiffAugment", "bcr", "build", "symmetric_to_model"]


class DAugment:
    """Identity augmentation, and the interface of the real ones."""

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


class _InSymmetricSpace(DAugment):
    """Applies ``self.transform`` to images mapped from the model's space to [-1, 1] and back."""

    def __init__(self, normalization: str, generator: torch.Generator):
        self.normalization, self.generator = normalization, generator

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.normalization == "symmetric":
            return self.transform(images)
        scale, shift = symmetric_to_model(self.normalization, images)
        return self.transform((images - shift) / scale) * scale + shift


def symmetric_to_model(normalization: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``model = sym * scale + shift`` for RGB ``sym`` in [-1, 1]."""
    from natgan.models.normalization import from_unit

    zero = from_unit(torch.zeros(1, 3, 1, 1, dtype=like.dtype, device=like.device), normalization)
    one = from_unit(torch.ones(1, 3, 1, 1, dtype=like.dtype, device=like.device), normalization)
    return (one - zero) / 2, (one + zero) / 2


class AdaAugment(_InSymmetricSpace):
    """ADA (``train.augment = "ada"``) or fixed-p ADA (``"fixed"``): the pipe plus the r_t controller."""

    def __init__(self, *, pipe: str, p: float, target: float, interval: int, kimg: float, adaptive: bool,
                 normalization: str, generator: torch.Generator, reduce: Callable = lambda t: t,
                 resample: str = "official"):
        super().__init__(normalization, generator)
        self.kind = "ada" if adaptive else "fixed"
        self.pipe = AugmentPipe(pipe, resample=resample)
        self.controller = AdaController(p=p, target=target, interval=interval, kimg=kimg, adaptive=adaptive)
        self.reduce, self.initial_p = reduce, p

    @property
    def p(self) -> float:
        return self.controller.p

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe(images, self.controller.p, self.generator)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.controller.p <= 0 else super().__call__(images)

    def observe(self, real_logits: torch.Tensor) -> None:
        self.controller.observe(real_logits)

    def after_step(self, batch: int) -> None:
        self.controller.after_step(batch, self.reduce)

    def stats(self) -> dict[str, float]:
        return {"p": self.controller.p, "rt": self.controller.rt}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue p and the r_t accumulator; a fixed-p run keeps the recipe's ``augment_p`` (which
        ``--set`` may have changed on resume)."""
        if state.get("kind") in ("ada", "fixed"):
            self.controller.load_state_dict(state)
            if self.kind == "fixed":
                self.controller.p = self.initial_p


class DiffAugment(_InSymmetricSpace):
    """DiffAugment (``train.augment = "diffaug"``) with ``train.diffaug_policy``."""

    kind = "diffaug"

    def __init__(self, policy: str, *, normalization: str, generator: torch.Generator):
        super().__init__(normalization, generator)
        self.policy = parse_policy(policy)

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return diff_augment(images, self.policy, self.generator)


def build(train: Any, *, normalization: str, generator: torch.Generator,
          reduce: Callable = lambda t: t) -> DAugment:
    """The augmentation ``train.augment`` asks for (the recipe has validated the keys)."""
    if train.augment == "none":
        return DAugment.none()
    if train.augment == "diffaug":
        return DiffAugment(train.diffaug_policy, normalization=normalization, generator=generator)
    return AdaAugment(pipe=train.augment_pipe, p=train.augment_p, target=train.ada_target,
                      interval=train.ada_interval, kimg=train.ada_kimg, adaptive=train.augment == "ada",
                      normalization=normalization, generator=generator, reduce=reduce,
                      resample=train.ada_resample)
