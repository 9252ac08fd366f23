"""ADA's augmentation pipe (Karras et al. 2020, "Training GANs with Limited Data"), from the paper.

:class:`AugmentPipe` applies the paper's 12 augmentations (Appendix B), each to each image with
probability ``p`` and the paper's parameter distributions:

====================  ==========================================================================
pixel blitting        x-flip (i ~ U{0,1}), 90-degree rotation (i ~ U{0..3}), integer translation
                      (t ~ U(-0.125, 0.125) of the side, rounded to whole pixels)
general geometric     isotropic scaling (s ~ lognormal(0, (0.2 ln 2)^2)), arbitrary rotation
                      (theta ~ U(-pi, pi), twice with p_rot = 1 - sqrt(1 - p) so the total is p),
                      anisotropic scaling (s, 1/s), fractional translation (t ~ N(0, 0.125^2) of the side)
colour                brightness (b ~ N(0, 0.2^2)), contrast (c ~ lognormal(0, (0.5 ln 2)^2)),
                      luma flip (i ~ U{0,1}), hue rotation (theta ~ U(-pi, pi)), saturation
                      (s ~ lognormal(0, (ln 2)^2))
====================  ==========================================================================

Following Appendix C, the geometric ones are composed into ONE 3x3 matrix per image (output -> input
pixel coordinates, centred on the image) and applied in a single resampling
(:mod:`natgan.augment.ada_resample`), so the chain never blurs or crops repeatedly; colour ones are
composed into one 4x4 matrix on [r, g, b, 1] in [-1, 1] space, with luma axis v = (1, 1, 1) / sqrt(3).

The resampling is a choice, ``train.ada_resample``:

* ``official`` (default): stylegan2-ada-pytorch's execution (:func:`~natgan.augment.ada_resample.resample_official`):
  every image whose geometry fired, pixel blits included, goes through its sym6 up/down chain with its
  reflect margins, shared by those images; equal to the official pipe on the same draws to float32
  rounding (1e-6). It is the default because published ADA results, and runs moved over from
  stylegan2-ada-pytorch, were made with exactly this augmentation distribution.
* ``exact``: blits (flips, 90-degree turns, whole-pixel shifts) are exact reflect-indexed copies and the
  general transforms compensate the filters' group delay, so flips and rotations land where the ideal
  transform puts them (the official is 0.098 px off on mirrored transforms; on a smooth 64-px image a
  0.3 rad rotation is 3.7x closer to the ideal, RMS 0.00051 vs 0.00187, and flips / quarter turns are
  exact instead of RMS 0.0084: docs/official-differences.md).

In both modes an image on which no augmentation fired is returned bit-for-bit (the official filters it
through the chain as well whenever the pipe has geometric augmentations; sym6 reconstructs it perfectly, so
that changes it by float32 rounding only, at most 1.1e-5), so ``p = 0`` is the exact identity.

Random parameters come from an explicit CPU generator, so training stays resumable bit-for-bit. The
overfitting heuristic that moves ``p`` is :mod:`natgan.augment.ada_controller`.
"""

from __future__ import annotations

import math

import torch

from natgan.augment.ada_resample import blit, is_blit, resample, resample_official
from natgan.errors import ConfigError

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
BLIT = ("xflip", "rotate90", "xint")

PIPELINES: dict[str, tuple[str, ...]] = {
    "blit": BLIT,
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": COLOUR,
    "bg": GEOMETRIC,
    "bgc": GEOMETRIC + COLOUR,
    "gc": ("scale", "rotate", "aniso", "xfrac") + COLOUR,
}

# The paper's parameter scales (Appendix B; the same as stylegan2-ada-pytorch's defaults).
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


RESAMPLE_MODES = ("official", "exact")


def check_resample(mode: str) -> str:
    if mode not in RESAMPLE_MODES:
        raise ConfigError(f"key 'train.ada_resample': expected one of {', '.join(RESAMPLE_MODES)}, got {mode!r}")
    return mode


def pipeline(name: str) -> tuple[str, ...]:
    """The augmentations of a named pipeline; unknown names are a one-line ConfigError."""
    if name not in PIPELINES:
        raise ConfigError(f"key 'train.augment_pipe': unknown pipeline {name!r}; "
                          f"valid: {', '.join(PIPELINES)}")
    return PIPELINES[name]


# --------------------------------------------------------------------------------- matrices
def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(3, tx)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(3, sx)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(3, theta)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def rotate90(k: torch.Tensor) -> torch.Tensor:
    """Rotation by k * 90 degrees with exact integer entries (cos/sin of k*pi/2 are not exact in floats)."""
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[k]
    m = _eye(3, cos)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def translate3d(b: torch.Tensor) -> torch.Tensor:
    m = _eye(4, b)
    m[:, 0, 3] = m[:, 1, 3] = m[:, 2, 3] = b
    return m


def scale3d(c: torch.Tensor) -> torch.Tensor:
    m = _eye(4, c)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = c
    return m


def luma_axis() -> torch.Tensor:
    return torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64) / math.sqrt(3)


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the unit 3-vector ``axis`` (Rodrigues), as a 4x4 homogeneous matrix."""
    x, y, z = axis[0], axis[1], axis[2]
    c, s = torch.cos(theta), torch.sin(theta)
    d = 1 - c
    m = _eye(4, theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = x * x * d + c, x * y * d - z * s, x * z * d + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * d + z * s, y * y * d + c, y * z * d - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * d - y * s, z * y * d + x * s, z * z * d + c
    return m


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64).repeat(like.shape[0], 1, 1)


# ------------------------------------------------------------------------------ parameters
class Draw:
    """Random parameters of one batch: ``fired[name]`` says on which images each augmentation acted."""

    def __init__(self, batch: int, gen: torch.Generator, p: float):
        self.batch, self.gen, self.p = batch, gen, p
        self.fired: dict[str, torch.Tensor] = {}

    def mask(self, name: str, prob: float | None = None) -> torch.Tensor:
        m = torch.rand(self.batch, generator=self.gen, dtype=torch.float64) < (self.p if prob is None else prob)
        self.fired[name] = self.fired[name] | m if name in self.fired else m
        return m

    def uniform(self) -> torch.Tensor:
        return torch.rand(self.batch, generator=self.gen, dtype=torch.float64)

    def normal(self) -> torch.Tensor:
        return torch.randn(self.batch, generator=self.gen, dtype=torch.float64)

    def integer(self, high: int) -> torch.Tensor:
        return torch.randint(high, (self.batch,), generator=self.gen)


# The order the parts are composed in (Appendix B); arbitrary rotation comes twice, around anisotropic scaling.
GEOMETRIC_ORDER = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "rotate", "xfrac")


def geometric_matrix(ops: tuple[str, ...], draw: Draw, height: int, width: int) -> torch.Tensor:
    """[B, 3, 3] float64 output->input map in centred pixel coordinates, the product of the parts in order."""
    g = _eye(3, torch.empty(draw.batch))
    for name in GEOMETRIC_ORDER:
        if name in ops:
            g = g @ _geometric_part(name, draw, height, width)
    return g


def _geometric_part(name: str, draw: Draw, height: int, width: int) -> torch.Tensor:
    """The inverse (output -> input) matrix of one augmentation for every image; identity where it did not fire."""
    if name == "xflip":
        i = draw.integer(2) * draw.mask(name)
        return scale2d(1.0 - 2.0 * i.double(), torch.ones(draw.batch, dtype=torch.float64))
    # Rotations: output -> input is R(+angle), the official's rotate2d_inv(-angle), so the same drawn k or theta
    # turns the image the same way as stylegan2-ada-pytorch (the distribution is symmetric either way).
    if name == "rotate90":
        k = draw.integer(4) * draw.mask(name)
        return rotate90(k)
    if name == "xint":
        t = (draw.uniform() * 2 - 1) * XINT_MAX, (draw.uniform() * 2 - 1) * XINT_MAX
        on = draw.mask(name)
        return translate2d(-torch.round(t[0] * width) * on, -torch.round(t[1] * height) * on)
    if name == "scale":
        s = torch.exp2(draw.normal() * SCALE_STD * draw.mask(name))
        return scale2d(1 / s, 1 / s)
    if name == "rotate":
        p_rot = 1 - math.sqrt(max(1 - min(draw.p, 1.0), 0.0))
        theta = (draw.uniform() * 2 - 1) * math.pi * ROTATE_MAX * draw.mask(name, p_rot)
        return rotate2d(theta)
    if name == "aniso":
        s = torch.exp2(draw.normal() * ANISO_STD * draw.mask(name))
        return scale2d(1 / s, s)
    if name == "xfrac":
        tx, ty = draw.normal() * XFRAC_STD, draw.normal() * XFRAC_STD
        on = draw.mask(name)
        return translate2d(-tx * width * on, -ty * height * on)
    raise ValueError(name)


def colour_matrix(ops: tuple[str, ...], draw: Draw) -> torch.Tensor:
    """[B, 4, 4] float64 colour transform on [r, g, b, 1] in [-1, 1] space, parts applied in paper order."""
    c = _eye(4, torch.empty(draw.batch))
    v = luma_axis()
    vv = torch.outer(v, v)
    eye = torch.eye(4, dtype=torch.float64)
    for name in COLOUR:
        if name not in ops:
            continue
        if name == "brightness":
            m = translate3d(draw.normal() * BRIGHTNESS_STD * draw.mask(name))
        elif name == "contrast":
            m = scale3d(torch.exp2(draw.normal() * CONTRAST_STD * draw.mask(name)))
        elif name == "lumaflip":
            i = (draw.integer(2) * draw.mask(name)).double().view(-1, 1, 1)
            m = eye - 2 * vv * i
        elif name == "hue":
            m = rotate3d(v, (draw.uniform() * 2 - 1) * math.pi * HUE_MAX * draw.mask(name))
        else:  # saturation
            s = torch.exp2(draw.normal() * SATURATION_STD * draw.mask(name)).view(-1, 1, 1)
            m = vv + (eye - vv) * s
        c = m @ c
    return c



# ----------------------------------------------------------------------------------- the pipe
def apply_colour(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[r, g, b] in [-1, 1] -> C[:3, :3] @ rgb + C[:3, 3] per image."""
    c = c.to(device=x.device, dtype=x.dtype)
    return torch.einsum("bij,bjhw->bihw", c[:, :3, :3], x) + c[:, :3, 3].view(-1, 3, 1, 1)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.to(a.device).view(-1, 1, 1, 1), a, b)


class AugmentPipe:
    """Apply a named pipeline at probability ``p`` to images in [-1, 1] ``[B, 3, H, W]``.

    ``generator`` supplies every random number (CPU), so the same generator state gives the same batch.
    """

    def __init__(self, name: str = "bgc", resample: str = "official"):
        self.name = name
        self.ops = pipeline(name)
        self.resample = check_resample(resample)

    @classmethod
    def of(cls, *ops: str, resample: str = "official") -> "AugmentPipe":
        """A pipe of chosen augmentations (always applied in the paper's order), e.g. for tests."""
        unknown = [op for op in ops if op not in GEOMETRIC + COLOUR]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}")
        pipe = cls.__new__(cls)
        pipe.name, pipe.ops, pipe.resample = "+".join(ops), tuple(ops), check_resample(resample)
        return pipe

    def __call__(self, x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        """Augment ``x``; the result has ``x``'s dtype. The pipe itself always computes in at least float32
        with autocast off: under bf16/fp16 training the filter matrices and sampling positions would
        otherwise be rounded to 8-bit mantissas (sampling errors of a fraction of a pixel)."""
        if p <= 0:
            return x
        with torch.autocast(x.device.type, enabled=False):
            return self._augment(x.to(torch.promote_types(x.dtype, torch.float32)), p, generator).to(x.dtype)

    def _augment(self, x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        draw = Draw(b, generator, p)
        geometric = [op for op in self.ops if op in GEOMETRIC]
        if geometric:
            g = geometric_matrix(tuple(geometric), draw, h, w)
            moved = torch.zeros(b, dtype=torch.bool)
            for name in geometric:
                moved |= draw.fired.get(name, moved)
            if bool(moved.any()) and self.resample == "official":
                idx = moved.nonzero().flatten()
                x = x.index_copy(0, idx.to(x.device), resample_official(x[idx.to(x.device)], g[idx]))
            elif bool(moved.any()):
                exact = is_blit(g)
                out = x
                if bool((moved & exact).any()):
                    out = _where(moved & exact, blit(x, g), out)
                general = moved & ~exact
                if bool(general.any()):
                    idx = general.nonzero().flatten()
                    smooth = resample(x[idx.to(x.device)], g[idx])
                    out = out.index_copy(0, idx.to(x.device), smooth)
                x = out
        colour = [op for op in self.ops if op in COLOUR]
        if colour:
            c = colour_matrix(tuple(colour), draw)
            changed = torch.zeros(b, dtype=torch.bool)
            for name in colour:
                changed |= draw.fired.get(name, changed)
            if bool(changed.any()):
                x = _where(changed, apply_colour(x, c), x)
        return x
