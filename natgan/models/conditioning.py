"""Class conditioning shared by every registered family, as stylegan2-ada-pytorch builds it.

Labels reach a network as ``c``: either class indices (an integer tensor ``[B]``) or the one-hot /
soft vectors ``[B, num_classes]`` the official code passes. :func:`one_hot` turns both into the float
``[B, num_classes]`` the layers read, so callers can interpolate between classes with soft vectors.

* Generators with a mapping network (StyleNAT, StyleSwin, StyleGAN2; GANformer's global latent):
  :class:`LabelEmbedding` is the official ``MappingNetwork.embed`` (a fully-connected layer of the one-hot
  label, learning rate 1) followed by the same 2nd-moment normalisation z gets; the generator
  concatenates it with the normalised z at the mapping input.
* Discriminators: :class:`ProjectionHead` is the official conditional epilogue. The final layer emits
  ``cmap_dim`` features instead of one logit, a label mapping network (embedding + ``num_layers``
  lrelu layers at learning-rate multiplier 0.01, the official ``MappingNetwork(z_dim=0, ...)``) turns c
  into ``cmap``, and the logit is ``<features, cmap> / sqrt(cmap_dim)``.

``num_classes = 0`` (every default) builds none of this, so unconditional models keep their parameters,
initial weights (the RNG draw order) and outputs bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from natgan.models.layers import EqualLinear, PixelNorm

D_MAPPING_LAYERS = 8  # the official discriminator's label mapping: MappingNetwork defaults (8 layers, lr 0.01)


def one_hot(c: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Labels as float ``[B, num_classes]``: class indices ``[B]`` are one-hot encoded, vectors pass through.

    Raises ValueError for a missing label, an index outside ``[0, num_classes)`` or a vector of the
    wrong width, so a conditional network never silently runs on a wrong label."""
    if c is None:
        raise ValueError(f"this network is class-conditional ({num_classes} classes): give labels c")
    if c.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if c.ndim != 1:
            raise ValueError(f"class indices must be [B], got {list(c.shape)}")
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= num_classes):
            raise ValueError(f"class index outside [0, {num_classes}): {c.tolist()}")
        return F.one_hot(c.long(), num_classes).float()
    if c.ndim != 2 or c.shape[1] != num_classes:
        raise ValueError(f"label vectors must be [B, {num_classes}], got {list(c.shape)}")
    return c.float()


def check_unconditional(c: torch.Tensor | None) -> None:
    """An unconditional network refuses labels instead of ignoring them."""
    if c is not None:
        raise ValueError("this network is unconditional (num_classes = 0): labels c are not accepted")


class LabelEmbedding(nn.Module):
    """One-hot label -> fully-connected embedding -> unit 2nd moment (official ``embed`` + normalisation)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = EqualLinear(num_classes, dim)
        self.norm = PixelNorm()

    def forward(self, c: torch.Tensor | None) -> torch.Tensor:
        return self.norm(self.embed(one_hot(c, self.num_classes).to(self.embed.weight.dtype)))


class LabelMapping(nn.Module):
    """The discriminator's label mapping network: ``c -> cmap [B, dim]`` (official ``MappingNetwork``
    with ``z_dim = 0``: embedding, normalisation, ``num_layers`` lrelu layers at lr multiplier 0.01)."""

    def __init__(self, num_classes: int, dim: int, num_layers: int = D_MAPPING_LAYERS, lr_mul: float = 0.01):
        super().__init__()
        self.embed = LabelEmbedding(num_classes, dim)
        self.layers = nn.Sequential(*[EqualLinear(dim, dim, lr_mul=lr_mul, activation="fused_lrelu")
                                      for _ in range(num_layers)])

    def forward(self, c: torch.Tensor | None) -> torch.Tensor:
        return self.layers(self.embed(c))


class ProjectionHead(nn.Module):
    """``<features, cmap(c)> / sqrt(cmap_dim)``: the logit of the official conditional discriminator."""

    def __init__(self, num_classes: int, cmap_dim: int, mapping_layers: int = D_MAPPING_LAYERS,
                 mapping_lr: float = 0.01):
        """``mapping_layers``/``mapping_lr``: the label mapping's depth and lr multiplier (official
        ``mapping_kwargs``; stylegan2-ada-pytorch's defaults 8 / 0.01, the TensorFlow stylegan2-ada D's 0 / 0.1)."""
        super().__init__()
        self.num_classes, self.cmap_dim = num_classes, cmap_dim
        self.mapping = LabelMapping(num_classes, cmap_dim, mapping_layers, mapping_lr)

    def forward(self, features: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        cmap = self.mapping(c).to(features.dtype)
        return (features * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))


class DirectProjection(nn.Module):
    """GANformer's conditional logit (dorarad/gansformer ``DiscriminatorEpilogue``): the final layer emits one
    feature per class and the logit is the one of the label, ``(features * one_hot(c)).sum(1)`` - no label
    mapping network and no scaling."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, features: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return (features * one_hot(c, self.num_classes).to(features)).sum(dim=1, keepdim=True)


def project_logits(head: nn.Module | None, features: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """A discriminator's output: ``features`` are the logits when unconditional (``head`` None)."""
    if head is None:
        check_unconditional(c)
        return features
    return head(features, c)



def conditional_mapping(style: nn.Sequential, label_embed: LabelEmbedding | None, z: torch.Tensor,
                        c: torch.Tensor | None) -> torch.Tensor:
    """Run a ``PixelNorm + layers`` mapping network (:func:`natgan.models.layers.mapping_network`) on z,
    with the normalised label embedding concatenated after the normalisation of z when conditional
    (official: ``x = cat([normalize_2nd_moment(z), normalize_2nd_moment(embed(c))])``)."""
    if label_embed is None:
        check_unconditional(c)
        return style(z)
    x = torch.cat([style[0](z), label_embed(c).to(z.dtype)], dim=1)
    return style[1:](x)


class ClassBoundGenerator(nn.Module):
    """A class-conditional generator with its class fixed, honouring the *unconditional* contract.

    Why: every latent-space tool (style mixing, walks, projection, SeFa directions, attention maps, PPL)
    speaks the unconditional contract ``G.mapping(z)`` / ``G(z, psi, w_avg)``. Bound to one class, a
    conditional generator is exactly such a generator, so those tools work per class without knowing about
    labels, and the truncation centre they compute (the mean w of many z) is that class's centre.
    Attributes (``z_dim``, ``n_latent``, ``resolution``, ``noise_mode``, ...) are the wrapped generator's.
    """

    num_classes = 0

    def __init__(self, generator: nn.Module, c: int):
        super().__init__()
        k = int(getattr(generator, "num_classes", 0))
        if not 0 <= int(c) < k:
            raise ValueError(f"class {c} is outside [0, {k})")
        self.generator = generator
        self.label = int(c)

    def _labels(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full((z.shape[0],), self.label, dtype=torch.long, device=z.device)

    def mapping(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        check_unconditional(c)
        return self.generator.mapping(z, self._labels(z))

    def synthesis(self, w: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.generator.synthesis(w, *args, **kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0,
                w_avg: torch.Tensor | None = None) -> torch.Tensor:
        check_unconditional(c)
        return self.generator(z, self._labels(z), psi=psi, w_avg=w_avg)

    @property
    def noise_mode(self) -> str:
        return self.generator.noise_mode

    @noise_mode.setter
    def noise_mode(self, mode: str) -> None:
        self.generator.noise_mode = mode

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["generator"], name)
