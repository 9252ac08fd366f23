"""Seeds -> 8-bit images through the generator contract, shared by ``sample``, ``fid`` and the trainer.

Everything here uses only the contract (``z_dim``, ``mapping``, ``synthesis``, ``G(z, c, psi, w_avg)``,
``normalization``), quantises with :func:`natgan.models.normalization.to_uint8` (the same rounding as
the saved PNGs of the reference pipeline), and keeps per-seed latents, so an FID image ``i`` is the
PNG that ``nat-gan sample --seeds i`` writes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from natgan.models.normalization import to_uint8
from natgan.models.truncation import truncate
from natgan.sampling.classes import LabelSource, num_classes_of
from natgan.sampling.seeds import latents_for_seeds

W_AVG_SEED = 0x5EED  # fixed, so truncation centres are identical across runs and machines


def model_device(G: nn.Module) -> torch.device:
    for tensor in G.parameters():
        return tensor.device
    for tensor in G.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(G: nn.Module, noise_mode: str | None = None) -> Iterator[nn.Module]:
    """Eval mode (and, for models with noise inputs such as StyleGAN2, ``G.noise_mode``) for the block."""
    was_training = G.training
    previous_noise = getattr(G, "noise_mode", None)
    G.eval()
    if noise_mode is not None and hasattr(G, "noise_mode"):
        G.noise_mode = noise_mode
    try:
        yield G
    finally:
        G.train(was_training)
        if noise_mode is not None and hasattr(G, "noise_mode"):
            G.noise_mode = previous_noise


@torch.inference_mode()
def compute_w_avg(G: nn.Module, *, num: int = 10_000, seed: int = W_AVG_SEED, batch_size: int = 1024,
                  c: int | None = None) -> torch.Tensor:
    """Truncation centre: mean of ``G.mapping(z)`` over ``num`` latents from a fixed CPU seed.

    All latents are drawn at once on the CPU and averaged in float64, so the result does not depend
    on the batch size or the device. Shape: ``w.shape[1:]`` (broadcasts against ``[B, ...]``).
    A class-conditional generator needs the class ``c``: its centre is that class's mean w (the per-class
    centre StyleGAN-XL truncates toward; stylegan2-ada keeps one running mean over all classes instead).
    """
    device = model_device(G)
    if num_classes_of(G) and c is None:
        raise ValueError("a class-conditional generator has one truncation centre per class: pass c")
    z = torch.randn(num, G.z_dim, generator=torch.Generator().manual_seed(seed))
    total = None
    for chunk in z.split(batch_size):
        w = G.mapping(chunk.to(device)) if c is None else \
            G.mapping(chunk.to(device), torch.full((len(chunk),), int(c), dtype=torch.long, device=device))
        part = w.double().sum(dim=0)
        total = part if total is None else total + part
    return (total / num).float()


def truncation_centre(G: nn.Module, psi: float, stored: torch.Tensor | None = None) -> torch.Tensor | None:
    """The centre every sampling path truncates toward (``sample`` in all its modes, ``fid``, the studio).

    Why one policy: ``sample --trunc``, its style-mixing, edit and walk modes and the studio must put the same
    seed on the same image. In order:

    * ``stored`` (a checkpoint's ``extra.w_avg``: rosinality's ``latent_avg``, NVlabs' ``mapping.w_avg``) wins,
      because the official code truncates toward it, so an imported model's truncated images are the official
      ones; for a class-conditional stylegan2-ada import that is the official centre over all classes;
    * else ``psi == 1`` needs none (None);
    * else an unconditional generator (or one bound to a class,
      :class:`~natgan.models.conditioning.ClassBoundGenerator`) gets :func:`compute_w_avg`, the mean w of 10,000
      fixed-seed latents (of that class when bound);
    * an unbound class-conditional generator gets None: :class:`ImageGenerator` then moves each image toward
      its own class's centre (computed on first use).
    """
    if stored is not None:
        return stored
    if psi == 1.0 or num_classes_of(G):
        return None
    return compute_w_avg(G)


class ImageGenerator:
    """Turns seeds into uint8 ``[B, 3, R, R]`` batches on the model's device.

    ``psi != 1`` truncates in w space towards ``w_avg`` (when not given: :func:`truncation_centre`'s
    computed centre). On CUDA an out-of-memory error halves the batch and retries, so an optimistic automatic
    batch size never kills a long run.

    Class-conditional generators need ``labels`` (a label source of :mod:`natgan.sampling.classes`: the
    class of each seed); without a given ``w_avg`` they truncate each image toward its own class's centre.
    """

    def __init__(self, G: nn.Module, *, batch_size: int = 8, psi: float = 1.0, w_avg: torch.Tensor | None = None,
                 labels: LabelSource | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.G = G
        self.batch_size = int(batch_size)
        self.psi = float(psi)
        self.device = model_device(G)
        self.num_classes = num_classes_of(G)
        if self.num_classes and labels is None:
            raise ValueError(f"the generator is class-conditional ({self.num_classes} classes): give labels")
        if not self.num_classes and labels is not None:
            raise ValueError("the generator is unconditional: labels are not accepted")
        self.labels = labels
        self._class_centres: dict[int, torch.Tensor] = {}
        w_avg = truncation_centre(G, self.psi, w_avg)
        self.w_avg = None if w_avg is None else w_avg.to(self.device)

    def class_centre(self, c: int) -> torch.Tensor:
        """The truncation centre of class ``c`` (computed once, on first use)."""
        if c not in self._class_centres:
            self._class_centres[c] = compute_w_avg(self.G, c=c).to(self.device)
        return self._class_centres[c]

    def _centres(self, c: torch.Tensor) -> torch.Tensor:
        if self.w_avg is not None:
            return self.w_avg
        return torch.stack([self.class_centre(int(k)) for k in c.tolist()])

    def _forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if c is None:
            images = self.G(z) if self.psi == 1.0 else self.G(z, psi=self.psi, w_avg=self.w_avg)
        elif self.psi == 1.0:
            images = self.G(z, c)
        else:
            images = self.G(z, c, psi=self.psi, w_avg=self._centres(c))
        return to_uint8(images, self.G.normalization)

    def _forward_w(self, w: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.G.synthesis(w), self.G.normalization)

    def _run(self, fn, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``fn(inputs[, labels])`` under inference mode; on CUDA OOM split the batch in two and retry."""
        extra = () if labels is None else (labels.to(self.device),)
        with torch.inference_mode():
            try:
                return fn(inputs.to(self.device), *extra)
            except torch.cuda.OutOfMemoryError:
                if len(inputs) == 1:
                    raise
        # Only reached after an OOM; retrying outside the except block frees the failed attempt first.
        torch.cuda.empty_cache()
        half = len(inputs) // 2
        self.batch_size = max(1, min(self.batch_size, half))
        parts = [(inputs[:half], None if labels is None else labels[:half]),
                 (inputs[half:], None if labels is None else labels[half:])]
        return torch.cat([self._run(fn, part, lab) for part, lab in parts])

    def labels_for(self, seeds: Sequence[int]) -> torch.Tensor | None:
        """The class of each seed's image (None for an unconditional generator)."""
        return None if self.labels is None else self.labels(seeds)

    def images_from_w(self, w: torch.Tensor) -> torch.Tensor:
        """uint8 images of ready-made ``w`` latents (no truncation applied here), ``batch_size`` at a time."""
        if len(w) == 0:
            return torch.empty(0, 3, self.G.resolution, self.G.resolution, dtype=torch.uint8)
        return torch.cat([self._run(self._forward_w, part) for part in w.split(self.batch_size)])

    def images(self, seeds: Sequence[int]) -> torch.Tensor:
        """uint8 images for ``seeds`` (one forward pass, split only on OOM).

        In ``random`` noise mode the batch's noise maps are drawn from torch's RNG seeded with the batch's
        first seed (the caller's RNG state is restored after), so random-noise images are reproducible:
        the same seeds in the same batches give the same images in ``sample`` and in a metric.
        """
        z = latents_for_seeds(seeds, self.G.z_dim)
        labels = self.labels_for(seeds)
        if getattr(self.G, "noise_mode", None) != "random" or len(z) == 0:
            return self._run(self._forward, z, labels)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(seeds[0]) % 2**63)
            return self._run(self._forward, z, labels)

    def batches(self, seeds: Sequence[int]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """``(seed_chunk, uint8 images)`` for consecutive chunks of at most ``batch_size`` seeds."""
        chunk: list[int] = []
        for seed in seeds:  # streamed: a SeedList of 10^9 seeds is never materialised
            chunk.append(int(seed))
            if len(chunk) == self.batch_size:
                yield chunk, self.images(chunk)
                chunk = []
        if chunk:
            yield chunk, self.images(chunk)

    def interpolation(self, seed_a: int, seed_b: int, frames: int) -> Iterator[torch.Tensor]:
        """uint8 batches of a linear walk in (truncated) w space from ``seed_a`` to ``seed_b``."""
        if frames < 2:
            raise ValueError(f"an interpolation needs at least 2 frames, got {frames}")
        with torch.inference_mode():
            z = latents_for_seeds([seed_a, seed_b], self.G.z_dim).to(self.device)
            c = self.labels_for([seed_a, seed_b])
            w = self.G.mapping(z) if c is None else self.G.mapping(z, c.to(self.device))
            if self.psi != 1.0:
                w = truncate(w, self.psi, self.w_avg if c is None else self._centres(c))
            t = torch.linspace(0, 1, frames, device=self.device).view(-1, *([1] * (w.ndim - 1)))
            path = torch.lerp(w[:1], w[1:2], t.to(w.dtype))
        for chunk in path.split(self.batch_size):
            yield self._run(self._forward_w, chunk)
