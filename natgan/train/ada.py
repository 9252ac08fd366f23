"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data"), from the paper.

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
pixel coordinates, centred on the image) and applied in a single resampling, so the chain never blurs
or crops repeatedly; colour ones are composed into one 4x4 matrix on [r, g, b, 1] in [-1, 1] space,
with luma axis v = (1, 1, 1) / sqrt(3). Resampling does not leak: the image is reflect-padded as far
as the transformed corners need (at most side - 1), upsampled 2x with the 12-tap sym6 wavelet filter,
sampled bilinearly, and downsampled 2x with the same filter, so frequencies above Nyquist that
rotation/scaling would fold back are removed; with reflection the padding shows no seams D could use to
tell augmented images apart ("leak" the augmentation into G).

Two deliberate differences from stylegan2-ada-pytorch, both exact where it is approximate: an image
whose geometric transform is a pure pixel-blitting one (flips, 90-degree turns, whole-pixel shifts,
or nothing) is copied exactly (reflect-indexed gather) instead of going through the filters, and an
image on which no augmentation fired is returned bit-for-bit. So ``p = 0`` is the exact identity.

Everything is differentiable w.r.t. the images to any order (``grid_sample`` wrapped so that its
backward is again differentiable, and the filters as small dense matrices per axis, or shifted slices
for large images), which R1 on augmented reals needs. Sampling positions are float32 for float32 images
(``grid_sample`` takes a grid of the image's dtype): an error of at most about 1e-7 of the padded
canvas's side, far below a pixel. Random parameters come from an explicit CPU
generator, so training stays resumable bit-for-bit.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

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

# sym6 (least-asymmetric Daubechies, 12 taps) low-pass decomposition filter: the wavelet the paper
# resamples with. Standard constants (PyWavelets' ``Wavelet('sym6').dec_lo``); sum sqrt(2), norm 1.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
_TAPS = len(SYM6)
# sym6 is only nearly symmetric: its centroid sits 0.40 taps before the middle, i.e. up- and downsampling
# each shift the image by 0.2 input pixels. They cancel for the identity, but a flip or rotation would
# turn one shift around and leave a visible offset; sampling at G(p + d) - d removes it.
_DELAY = (sum(i * t for i, t in enumerate(SYM6)) / sum(SYM6) - (len(SYM6) - 1) / 2) / 2
_MARGIN = 3  # extra output pixels per side so the downsampling filter has support at the border


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
    if name == "rotate90":
        k = draw.integer(4) * draw.mask(name)
        return rotate90((4 - k) % 4)
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
        return rotate2d(-theta)
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


# ------------------------------------------------------------------------------- resampling
def reflect_index(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror integer indices into [0, size) without repeating the edge pixel (torch's ``reflect`` mode)."""
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    r = torch.remainder(idx, period)
    return torch.where(r < size, r, period - r)


def _pixel_centres(height: int, width: int, step: float, margin: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred coordinates of a grid with spacing ``step`` covering the image plus ``margin`` pixels."""
    n_x, n_y = round((width + 2 * margin) / step), round((height + 2 * margin) / step)
    xs = (torch.arange(n_x, dtype=torch.float64, device=device) + 0.5) * step - margin - width / 2
    ys = (torch.arange(n_y, dtype=torch.float64, device=device) + 0.5) * step - margin - height / 2
    return ys.view(-1, 1).expand(n_y, n_x), xs.view(1, -1).expand(n_y, n_x)


def _map(g: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g = g.to(ys.device).view(-1, 1, 1, 3, 3)
    x_in = g[..., 0, 0] * xs + g[..., 0, 1] * ys + g[..., 0, 2]
    y_in = g[..., 1, 0] * xs + g[..., 1, 1] * ys + g[..., 1, 2]
    return y_in, x_in


def _gather(x: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] at integer positions iy, ix [B, h, w] (already inside the image)."""
    b, c, h, w = x.shape
    flat = (iy * w + ix).view(b, 1, -1).expand(-1, c, -1)
    return x.flatten(2).gather(2, flat).view(b, c, *iy.shape[1:])


def blit(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Exact resampling for transforms that map pixel centres to pixel centres; outside is reflected."""
    _, _, h, w = x.shape
    ys, xs = _pixel_centres(h, w, 1.0, 0.0, x.device)
    y_in, x_in = _map(g, ys, xs)
    iy = reflect_index(torch.round(y_in + h / 2 - 0.5).long(), h)
    ix = reflect_index(torch.round(x_in + w / 2 - 0.5).long(), w)
    return _gather(x, iy, ix)


def _filter(dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor(SYM6, dtype=dtype, device=device) / math.sqrt(2)  # unit DC gain


def _fir(x: torch.Tensor, taps: torch.Tensor, n: int, stride: int = 1) -> torch.Tensor:
    """``out[k] = sum_t taps[t] * x[..., stride * k + t]`` for k < n along the last axis, as a sum of shifted
    slices (large images, where a dense matrix per axis would cost more than the taps)."""
    out = x[..., 0: stride * (n - 1) + 1: stride] * taps[0]
    for t in range(1, len(taps)):
        out = out + x[..., t: t + stride * (n - 1) + 1: stride] * taps[t]
    return out


def _upsample_last_axis(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """2x along the last axis, polyphase: out[2j] and out[2j + 1] are 6-tap correlations of x with the even
    and odd taps (the zero-inserted samples are never multiplied), interleaved."""
    w = x.shape[-1]
    padded = F.pad(x, [_TAPS // 4, _TAPS // 4])
    even = _fir(padded, taps[0::2], w)
    odd = _fir(padded[..., 1:], taps[1::2], w)
    return torch.stack([even, odd], dim=-1).flatten(-2)


def _downsample_last_axis(y: torch.Tensor, offset: int) -> torch.Tensor:
    taps = _filter(y.dtype, y.device).flip(0)  # reversed: up- and downsampling together have zero phase
    y = y[..., offset:]
    return _fir(y, taps, (y.shape[-1] - _TAPS) // 2 + 1, 2)


# Up to this side length the filters run as one small dense matrix per axis (a matmul: on CPU several times
# faster than twelve shifted slices, forward and backward); above it the matrices' zeros would cost more.
DENSE_MAX = 160


@functools.lru_cache(maxsize=256)
def _axis_matrix(kind: str, n: int, a: int, b: int) -> torch.Tensor:
    """float64 CPU matrix of one 1-D stage, built by running the slice version on the identity.

    ``("up", n, lo, hi)``: [2 (n + lo + hi), n], reflect-pad by lo/hi then 2x upsampling;
    ``("down", n, offset, 0)``: [m, n], 2x downsampling from ``offset``.
    """
    eye = torch.eye(n, dtype=torch.float64)
    if kind == "up":
        padded = F.pad(eye.unsqueeze(0), [a, b], mode="reflect").squeeze(0) if a or b else eye
        return _upsample_last_axis(padded, _filter(torch.float64, "cpu") * 2).T.contiguous()
    return _downsample_last_axis(eye, a).T.contiguous()


def _along_axes(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ cols.T`` per image and channel: a separable linear filter given by its two matrices."""
    return torch.matmul(rows.to(x), torch.matmul(x, cols.to(x).T))


def pad_upsample2x(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect-pad by ``pad`` = (left, right, top, bottom), then :func:`upsample2x`, in one step."""
    h, w = x.shape[-2:]
    if max(h, w) <= DENSE_MAX:
        return _along_axes(x, _axis_matrix("up", h, pad[2], pad[3]), _axis_matrix("up", w, pad[0], pad[1]))
    return upsample2x(F.pad(x, list(pad), mode="reflect") if any(pad) else x)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Zero insertion + sym6 low-pass (as polyphase filtering); output pixel m sits at (m + 0.5) / 2 in
    input pixel units."""
    taps = _filter(x.dtype, x.device) * 2
    y = _upsample_last_axis(x, taps)
    return _upsample_last_axis(y.transpose(-1, -2), taps).transpose(-1, -2)


def downsample2x(y: torch.Tensor, offset: int) -> torch.Tensor:
    """sym6 low-pass (reversed, so up- and downsampling together have zero phase) then every 2nd pixel,
    starting ``offset`` pixels in."""
    h, w = y.shape[-2:]
    if max(h, w) <= 2 * DENSE_MAX:
        return _along_axes(y, _axis_matrix("down", h, offset, 0), _axis_matrix("down", w, offset, 0))
    y = _downsample_last_axis(y, offset)
    return _downsample_last_axis(y[..., offset:, :].transpose(-1, -2), 0).transpose(-1, -2)


class _GridSample(torch.autograd.Function):
    """Bilinear ``grid_sample`` (zeros outside) that is differentiable to any order w.r.t. the image.

    The sampling is linear in the image, so its backward is the transposed sampling
    (:class:`_GridSampleTransposed`), whose own backward is the sampling again. torch's built-in
    ``grid_sample`` has no double backward, which R1 through the augmentation needs; the grid is
    never differentiated (it comes from the drawn parameters).
    """

    @staticmethod
    def forward(ctx, image, grid):
        ctx.save_for_backward(grid)
        ctx.image_shape = image.shape
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def backward(ctx, grad):
        (grid,) = ctx.saved_tensors
        return _GridSampleTransposed.apply(grad, grid, ctx.image_shape), None


class _GridSampleTransposed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, grid, image_shape):
        ctx.save_for_backward(grid)
        shape_only = grad.new_empty(()).expand(image_shape)  # only its shape is read for the image gradient
        image_grad, _ = torch.ops.aten.grid_sampler_2d_backward(grad, shape_only, grid, 0, 0, False, [True, False])
        return image_grad

    @staticmethod
    def backward(ctx, grad_image):
        (grid,) = ctx.saved_tensors
        return _GridSample.apply(grad_image, grid), None, None


def bilinear(x: torch.Tensor, y_in: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of ``x`` [B, C, H, W] at pixel-unit positions [B, h, w] (pixel k's centre at k);
    outside the image counts as 0. Differentiable to any order w.r.t. ``x``."""
    h, w = x.shape[-2:]
    grid = torch.stack([(x_in + 0.5) * (2 / w) - 1, (y_in + 0.5) * (2 / h) - 1], dim=-1)
    return _GridSample.apply(x, grid.to(device=x.device, dtype=x.dtype))


def _padding(g: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int]:
    """Reflect padding (left, right, top, bottom) that covers every image's transformed corners plus the
    filters' support, at most side - 1 (what reflection can give)."""
    corners_y = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64) * (h / 2 + _MARGIN)
    corners_x = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64) * (w / 2 + _MARGIN)
    cy, cx = _map(g.cpu(), corners_y.view(1, 4), corners_x.view(1, 4))
    support = _TAPS / 4 + 1  # filter half-width in input pixels, plus one for bilinear

    def clip(v: float, side: int) -> int:
        return int(min(max(0.0, math.ceil(v + support)), side - 1))

    return (clip(-w / 2 - float(cx.min()), w), clip(float(cx.max()) - w / 2, w),
            clip(-h / 2 - float(cy.min()), h), clip(float(cy.max()) - h / 2, h))


def resample(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """General geometric transform without aliasing: reflect pad -> 2x up -> bilinear -> 2x down."""
    _, _, h, w = x.shape
    pad = _padding(g, h, w)
    up = pad_upsample2x(x, pad)
    ys, xs = _pixel_centres(h, w, 0.5, _MARGIN, x.device)
    y_in, x_in = _map(g, ys + _DELAY, xs + _DELAY)  # undo the filters' group delay around the transform
    y_in, x_in = y_in - _DELAY, x_in - _DELAY
    # centred input coordinates -> pixel indices of the upsampled padded image (pixel m's centre at m)
    y_up = (y_in + h / 2 + pad[2]) * 2 - 0.5
    x_up = (x_in + w / 2 + pad[0]) * 2 - 0.5
    sampled = bilinear(up, y_up, x_up)
    return downsample2x(sampled, 2 * _MARGIN - _TAPS // 2 + 1)[:, :, :h, :w]


def _is_blit(g: torch.Tensor) -> torch.Tensor:
    """Per image: does the transform move pixel centres onto pixel centres (entries and shifts integral)?"""
    return ((g - torch.round(g)).abs().flatten(1).amax(1) < 1e-9)


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

    def __init__(self, name: str = "bgc"):
        self.name = name
        self.ops = pipeline(name)

    @classmethod
    def of(cls, *ops: str) -> "AugmentPipe":
        """A pipe of chosen augmentations (always applied in the paper's order), e.g. for tests."""
        unknown = [op for op in ops if op not in GEOMETRIC + COLOUR]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}")
        pipe = cls.__new__(cls)
        pipe.name, pipe.ops = "+".join(ops), tuple(ops)
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
            if bool(moved.any()):
                exact = _is_blit(g)
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


class AdaController:
    """The overfitting heuristic r_t = E[sign(D(real))] and the paper's p update.

    Signs of D's real logits are summed on the device (no host sync per step); every ``interval``
    steps r_t is formed over those steps (all ranks together) and p moves by
    ``sign(r_t - target) * batch * interval / (kimg * 1000)``, so p can cross [0, 1] in ``kimg``
    thousand images. p stays in [0, 1]. With ``adaptive = False`` p stays fixed but r_t is still measured.
    """

    def __init__(self, *, p: float, target: float, interval: int, kimg: float, adaptive: bool):
        self.p, self.target, self.interval, self.kimg, self.adaptive = float(p), target, interval, kimg, adaptive
        self.sign_sum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.steps = 0
        self.rt = float("nan")

    def observe(self, real_logits: torch.Tensor) -> None:
        signs = torch.sign(real_logits.detach().float()).sum()
        n = torch.tensor(float(real_logits.numel()), device=signs.device)
        self.sign_sum = signs if self.sign_sum is None else self.sign_sum.to(signs.device) + signs
        self.count = n if self.count is None else self.count.to(n.device) + n

    def after_step(self, batch: int, reduce=lambda t: t) -> None:
        self.steps += 1
        if self.steps % self.interval or self.sign_sum is None:
            return
        totals = reduce(torch.stack([self.sign_sum, self.count]))
        self.rt = float(totals[0] / totals[1])
        self.sign_sum = self.count = None
        if self.adaptive:
            self.p = self.adjusted(self.p, self.rt, batch)

    def adjusted(self, p: float, rt: float, batch: int) -> float:
        step = (batch * self.interval) / (self.kimg * 1000)
        direction = (rt > self.target) - (rt < self.target)
        return min(max(p + direction * step, 0.0), 1.0)

    def state_dict(self) -> dict:
        zero = torch.zeros(())
        return {"p": self.p, "rt": self.rt, "steps": self.steps,
                "sign_sum": zero if self.sign_sum is None else self.sign_sum.detach().cpu(),
                "count": zero if self.count is None else self.count.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.rt, self.steps = float(state["p"]), float(state["rt"]), int(state["steps"])
        has = float(state["count"]) > 0
        self.sign_sum = state["sign_sum"].clone() if has else None  # moves to D's device at the next observe
        self.count = state["count"].clone() if has else None
