"""A deliberately tiny registered model for foundation tests (recipes, checkpoints, CLI plumbing).

Real architectures are exercised by their own test files; this one only has to honour the generator
contract so tests of shared machinery stay fast and independent of any architecture.
"""

from dataclasses import dataclass

import torch
from torch import nn

from natgan.config import option
from natgan.models import registry
from natgan.models.truncation import truncate

NAME = "_tiny_test"


@dataclass
class TinyConfig:
    resolution: int = option(8, min=4, max=64)
    z_dim: int = option(8, min=1)
    width: int = option(16, min=1)


class TinyGenerator(nn.Module):
    normalization = "symmetric"
    n_latent = 2

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.z_dim, self.resolution = cfg.z_dim, cfg.resolution
        self.map = nn.Linear(cfg.z_dim, cfg.width)
        self.out = nn.Linear(cfg.width * 2, 3 * cfg.resolution ** 2)

    def mapping(self, z):
        return self.map(z).unsqueeze(1).repeat(1, self.n_latent, 1)

    def synthesis(self, w):
        img = self.out(w.flatten(1)).view(-1, 3, self.resolution, self.resolution)
        return torch.tanh(img)

    def forward(self, z, psi=1.0, w_avg=None):
        return self.synthesis(truncate(self.mapping(z), psi, w_avg))


class TinyDiscriminator(nn.Module):
    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * cfg.resolution ** 2, 1))

    def forward(self, x):
        return self.net(x)


if NAME not in registry._REGISTRY:
    @registry.register_model(NAME, config=TinyConfig, description="test-only tiny model")
    def _build(cfg):
        return TinyGenerator(cfg), TinyDiscriminator(cfg)
