"""Perceptual path length (Karras et al. 2019; the protocol of stylegan2-ada-pytorch's ``ppl`` metrics).

For each sample, two latents are drawn, a point ``t`` on the path between them is taken, and the
LPIPS distance between the images at ``t`` and ``t + epsilon`` is divided by ``epsilon^2``. The path is
a lerp in w for models with a mapping network, a slerp in z for models without one (HiT), which the
result states. ``sampling="end"`` takes ``t = 0`` (path endpoints, StyleGAN2's reported ``ppl2_wend``),
``"full"`` takes ``t ~ U(0, 1)``. Noise inputs are redrawn per batch but shared by the two images of a
pair. With ``crop=True`` the FFHQ face crop (rows 3/8..7/8, columns 2/8..6/8) is scored; images above
256 px are box-downsampled by ``resolution // 256`` (after cropping, so a cropped 512/1024-px face is
scored at 128 px, as stylegan2-ada-pytorch does). The mean is taken over distances inside the ``[1, 99]``
percentiles (``lower``/``higher`` interpolation), as the reference implementation filters outliers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from natgan.errors import ConfigError
from natgan.metrics.lpips import LPIPS
from natgan.models.contract import has_mapping_network, noise_inputs, using_noise
from natgan.models.interpolation import slerp
from natgan.models.normalization import to_unit
from natgan.sampling.generate import eval_mode

SAMPLINGS = ("end", "full")


def _face_crop(images: torch.Tensor) -> torch.Tensor:
    c = images.shape[2] // 8
    return images[:, :, c * 3:c * 7, c * 2:c * 6]


def _to_lpips_input(images: torch.Tensor, crop: bool) -> torch.Tensor:
    """stylegan2-ada-pytorch's order: crop, then box-downsample by ``resolution // 256`` of the *full* image.

    So the face crop reaches LPIPS at 128 x 128 at every resolution from 256 up (TF StyleGAN/StyleGAN2
    computed the factor after cropping: 256 x 256 at 512 and 1024 px, 128 at 256 px).
    """
    factor = images.shape[2] // 256
    if crop:
        images = _face_crop(images)
    if factor > 1:
        images = F.avg_pool2d(images, factor)
    return images


def filtered_mean(dist: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> float:
    """Mean of the distances between the low (``lower``) and high (``higher``) percentiles, inclusive."""
    lo = np.percentile(dist, percentiles[0], method="lower")
    hi = np.percentile(dist, percentiles[1], method="higher")
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


@torch.no_grad()
def perceptual_path_length(G: nn.Module, lpips: LPIPS, *, n: int = 50_000, batch: int = 8, seed: int = 0,
                           device: torch.device | str | None = None, epsilon: float = 1e-4, sampling: str = "end",
                           crop: bool = False, percentiles: tuple[float, float] = (1.0, 99.0),
                           label_pool: torch.Tensor | None = None) -> dict:
    """``{"ppl": value, "protocol": {...}}`` for ``n`` path samples.

    Deterministic for a (seed, batch, device): latents, ``t`` and the noise maps are drawn batch by batch
    from one seeded stream, and a batch shares its noise maps (as stylegan2-ada-pytorch draws them), so a
    different batch size gives another, equally valid, sample of the same expectation. The batch is
    therefore part of the recorded protocol.
    """
    if sampling not in SAMPLINGS:
        raise ConfigError(f"ppl sampling '{sampling}': expected one of {', '.join(SAMPLINGS)}")
    if n < 1 or batch < 1:
        raise ConfigError(f"ppl: n ({n}) and batch ({batch}) must be at least 1")
    device = torch.device(device) if device is not None else next(iter(G.parameters())).device
    G = G.to(device)
    lpips = lpips.to(device)
    space = "w" if has_mapping_network(G) else "z"
    rng = torch.Generator().manual_seed(seed)
    noise_shapes = {k: v.shape for k, v in noise_inputs(G).items()}
    distances = []
    with eval_mode(G, "const"):
        done = 0
        while done < n:
            b = min(batch, n - done)
            t = torch.rand(b, generator=rng) * (1.0 if sampling == "full" else 0.0)
            z = torch.randn(2 * b, G.z_dim, generator=rng)
            noise = {k: torch.randn(shape, generator=rng).to(device) for k, shape in noise_shapes.items()}
            t, z = t.to(device), z.to(device)
            # conditional: one dataset label per path, shared by both ends (stylegan2-ada's PPL); drawn after
            # everything else, so unconditional runs keep their random stream
            c = None if label_pool is None else \
                torch.as_tensor(label_pool)[torch.randint(len(label_pool), (b,), generator=rng)].repeat(2).to(device)
            if space == "w":
                w0, w1 = (G.mapping(z) if c is None else G.mapping(z, c)).chunk(2)
                shape = (-1, *([1] * (w0.ndim - 1)))
                pair = torch.cat([torch.lerp(w0, w1, t.view(shape)), torch.lerp(w0, w1, t.view(shape) + epsilon)])
            else:
                z0, z1 = z.chunk(2)
                zz = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
                pair = G.mapping(zz) if c is None else G.mapping(zz, c)
            with using_noise(G, noise):
                images = to_unit(G.synthesis(pair).float(), G.normalization, clamp=False)
            a, b_img = _to_lpips_input(images, crop).chunk(2)
            distances.append((lpips(a, b_img) / epsilon ** 2).double().cpu())
            done += b
    value = filtered_mean(torch.cat(distances).numpy(), percentiles)
    side = _to_lpips_input(torch.zeros(1, 1, G.resolution, G.resolution), crop).shape[-1]
    lpips_input = f"{side}x{side}"
    return {"ppl": value, "protocol": {
        "metric": "ppl", "space": space, "path": "lerp in w" if space == "w" else "slerp in z (no mapping network)",
        "sampling": sampling, "epsilon": epsilon, "n": n, "crop": crop, "percentiles": list(percentiles),
        "lpips": "vgg-lin v0.1" if lpips.pretrained else "random-init VGG (not comparable)",
        "lpips_weights_sha256": getattr(lpips, "weights_id", ""), "seed": seed,
        "batch": batch, "lpips_input": lpips_input}}
