"""GAN objectives: non-saturating logistic loss, R1, bCR consistency, path-length regularisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-D(x)) + softplus(D(G(z))), batch means (the official StyleNAT/StyleSwin D loss)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||grad_x D(x)||^2 (create_graph so the penalty itself is differentiable)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def consistency(aug_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """bCR term: MSE between D on augmented and on original images (no detach, as the official code)."""
    return F.mse_loss(aug_logits, logits)


def path_length_penalty(images: torch.Tensor, w: torch.Tensor, mean_path: torch.Tensor,
                        decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """StyleGAN2 path-length regulariser: (penalty, new running mean, path lengths)."""
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), w, create_graph=True)
    lengths = grad.pow(2).sum(-1).mean(1).sqrt() if grad.ndim == 3 else grad.pow(2).sum(-1).sqrt()
    new_mean = mean_path + decay * (lengths.mean().detach() - mean_path)
    return (lengths - new_mean).pow(2).mean(), new_mean, lengths
