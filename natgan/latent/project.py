"""GAN inversion: find the latent whose image matches a target (Karras et al. 2020, stylegan2-ada-pytorch's
projector), for every generator through the contract.

The schedule is the paper's: start from the mean w, Adam (0.9, 0.999) with a learning rate that ramps
up over the first 5 % of steps and down (cosine) over the last 25 %; Gaussian noise added to w whose
scale ``w_std * 0.05`` decays quadratically to zero at 75 % of the steps; models with noise inputs have
their noise maps optimised too, under the multi-scale autocorrelation penalty (weight 1e5) and
re-normalised to zero mean / unit variance after each step. The loss is the LPIPS-VGG distance
(:mod:`natgan.metrics.lpips`, images area-downsampled to 256 px first) plus an optional pixel MSE.

``space``: ``w`` (one w row shared by every layer), ``wplus`` (one row per layer), or ``z`` — forced
for models without a mapping network (HiT), where the "mean w" is the mean z.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from natgan.errors import ConfigError, DataError
from natgan.latent.space import broadcast, n_rows, w_statistics
from natgan.latent.store import StoredLatents
from natgan.metrics.lpips import LPIPS, resize_for_lpips
from natgan.models.contract import has_mapping_network, noise_inputs, using_noise
from natgan.models.normalization import to_uint8, to_unit
from natgan.sampling.generate import eval_mode

PROJECTION_SPACES = ("w", "wplus")


@dataclass
class ProjectionSettings:
    steps: int = 1000
    space: str = "w"                 # w | wplus (z is chosen automatically for models without mapping)
    initial_lr: float = 0.1
    lr_rampup: float = 0.05          # fractions of the run
    lr_rampdown: float = 0.25
    initial_noise_factor: float = 0.05
    noise_ramp: float = 0.75
    noise_reg_weight: float = 1e5
    mse_weight: float = 0.0          # optional pixel MSE on [0, 1] RGB
    w_avg_samples: int = 10_000
    seed: int = 0
    continuation: bool = False       # set by project(init=...): run only the schedule's final phase

    def progress(self, step: int) -> float:
        """Schedule position ``t`` in [0, 1) of ``step``. A continuation (``--init``) starts from a projection
        that already ran the whole schedule, so it repeats only the final phase - the lr ramp-down, where the
        w noise is zero - instead of restarting the warm-up and the w noise that would undo the converged
        result."""
        t = step / self.steps
        if not self.continuation:
            return t
        start = 1.0 - self.lr_rampdown
        return max(start, self.noise_ramp) + (1.0 - max(start, self.noise_ramp)) * t

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: expected at least 1")
        if self.space not in PROJECTION_SPACES:
            raise ConfigError(f"--space '{self.space}': expected one of {', '.join(PROJECTION_SPACES)}")
        if self.mse_weight < 0 or not math.isfinite(self.mse_weight):
            raise ConfigError(f"--mse {self.mse_weight}: expected a finite weight >= 0")


@dataclass
class ProjectionResult:
    latents: StoredLatents            # one entry: the projected latent (and noise maps)
    image: torch.Tensor               # uint8 [1, 3, R, R] of the final latent (no w noise)
    lpips: float
    mse: float
    start_lpips: float                # of the mean-w image the optimisation started from
    start_mse: float
    history: list[dict] = field(default_factory=list)  # per step: step, lr, lpips, mse, loss


def learning_rate(t: float, s: ProjectionSettings) -> float:
    """The paper's ramp at progress ``t`` in [0, 1)."""
    ramp = min(1.0, (1.0 - t) / s.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / s.lr_rampup) if s.lr_rampup > 0 else 1.0
    return s.initial_lr * ramp


def w_noise_scale(t: float, w_std: float, s: ProjectionSettings) -> float:
    return w_std * s.initial_noise_factor * max(0.0, 1.0 - t / s.noise_ramp) ** 2


def noise_regularisation(maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared one-pixel autocorrelations (both axes) of each noise map, at every scale down to 8 px."""
    total = torch.zeros(())
    for noise in maps:
        x = noise
        total = total.to(x)
        while True:
            total = total + (x * torch.roll(x, shifts=1, dims=3)).mean() ** 2
            total = total + (x * torch.roll(x, shifts=1, dims=2)).mean() ** 2
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return total


def load_target(path: str | Path, resolution: int) -> torch.Tensor:
    """An image file -> ``[1, 3, R, R]`` RGB in [0, 1], resized like ``nat-gan prepare`` (shorter side with
    Lanczos, centre crop)."""
    from PIL import Image

    from natgan.data.imaging import BadImage, decode_rgb, read_image_file, resize_square

    path = Path(path)
    try:
        img = decode_rgb(read_image_file(path))
    except FileNotFoundError:
        raise DataError(f"{path}: target image not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an image") from None
    except BadImage as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    img = resize_square(img, resolution, Image.Resampling.LANCZOS)
    array = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return array.permute(2, 0, 1).unsqueeze(0).float() / 255.0


def _initial_latent(G: nn.Module, space: str, w_avg: torch.Tensor, init: StoredLatents | None) -> torch.Tensor:
    if init is not None:
        if init.space != space:
            raise ConfigError(f"--init holds {init.space} latents, but this projection optimises {space}")
        return init.w[:1].to(w_avg).clone()
    return w_avg.unsqueeze(1).repeat(1, n_rows(G), 1) if space == "wplus" else w_avg.clone()


def project(G: nn.Module, target: torch.Tensor, lpips: LPIPS, settings: ProjectionSettings | None = None, *,
            init: StoredLatents | None = None, name: str = "target",
            on_step: Callable[[int, torch.Tensor], None] | None = None) -> ProjectionResult:
    """Project one target image (``[1, 3, R, R]`` RGB in [0, 1]) into ``G``'s latent space.

    ``init`` (a previous result) continues from its latent and noise maps instead of the mean w, and continues
    the schedule (:meth:`ProjectionSettings.progress`: no second lr warm-up or w noise).
    ``on_step(step, uint8 image)`` sees the image of every step (for a progress video / bar).
    Deterministic for a given ``settings.seed`` on a given device.
    """
    s = settings or ProjectionSettings()
    s.validate()
    if init is not None and not s.continuation:
        s = dataclasses.replace(s, continuation=True)
    device = next(iter(G.parameters())).device
    target = target.to(device)
    if target.shape[-1] != G.resolution:
        raise ValueError(f"target is {target.shape[-1]} px, the generator makes {G.resolution} px")
    mapping = has_mapping_network(G)
    if not mapping and s.space == "wplus":
        raise ConfigError("--space wplus: this model has no mapping network and one latent (z); use --space w")
    if s.space == "wplus" and not n_rows(G):
        raise ConfigError("--space wplus: this model has one latent for every layer (n_latent is None)")
    space = s.space if mapping else "z"
    rng = torch.Generator().manual_seed(s.seed)

    requires_grad = {n: p.requires_grad for n, p in G.named_parameters()}
    G.requires_grad_(False)
    try:
        with eval_mode(G, "const"):
            w_avg, w_std = w_statistics(G, num=s.w_avg_samples)
            w_opt = _initial_latent(G, space, w_avg, init).requires_grad_(True)
            maps = {k: (init.noise[k][:1].to(device).clone() if init is not None and k in init.noise
                        else torch.randn(v.shape, generator=rng).to(device)).requires_grad_(True)
                    for k, v in noise_inputs(G).items()}
            target_features = lpips.features(resize_for_lpips(target))

            def render(latent: torch.Tensor) -> torch.Tensor:
                if space == "z":
                    w = G.mapping(latent)
                elif space == "wplus":
                    w = latent
                else:
                    w = broadcast(latent, G)
                return G.synthesis(w)

            def losses(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                dist = lpips.distance_from_features(lpips.features(resize_for_lpips(rgb)), target_features).sum()
                return dist, (rgb - target).square().mean()

            history: list[dict] = []
            optimizer = torch.optim.Adam([w_opt, *maps.values()], betas=(0.9, 0.999), lr=s.initial_lr)
            with using_noise(G, maps):
                with torch.no_grad():
                    start_lpips, start_mse = (float(v) for v in losses(to_unit(render(w_opt), G.normalization)))
                for step in range(s.steps):
                    t = s.progress(step)
                    lr = learning_rate(t, s)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    noise = torch.randn(w_opt.shape, generator=rng).to(device) * w_noise_scale(t, w_std, s)
                    image = render(w_opt + noise)
                    rgb = to_unit(image, G.normalization, clamp=False)
                    dist, mse = losses(rgb)
                    reg = noise_regularisation(list(maps.values())) if maps else torch.zeros((), device=device)
                    loss = dist + s.mse_weight * mse + s.noise_reg_weight * reg
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    with torch.no_grad():
                        for buf in maps.values():
                            buf -= buf.mean()
                            buf *= buf.square().mean().rsqrt()
                    history.append({"step": step + 1, "lr": lr, "lpips": dist.item(), "mse": mse.item(),
                                    "loss": loss.item()})
                    if on_step is not None:
                        on_step(step + 1, to_uint8(image.detach(), G.normalization))
                with torch.no_grad():
                    final = render(w_opt)
                    final_lpips, final_mse = (float(v) for v in losses(to_unit(final, G.normalization)))
    finally:
        for n, p in G.named_parameters():
            p.requires_grad_(requires_grad[n])
    latents = StoredLatents(w=w_opt.detach().cpu(), space=space, names=[name],
                            noise={k: v.detach().cpu() for k, v in maps.items()})
    return ProjectionResult(latents=latents, image=to_uint8(final, G.normalization).cpu(), lpips=final_lpips,
                            mse=final_mse, start_lpips=start_lpips, start_mse=start_mse, history=history)
