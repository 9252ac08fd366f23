"""ADA's geometric resampling (Karras et al. 2020, Appendix C): one transform matrix per image, no leaks.

:func:`resample` applies a [B, 3, 3] output -> input matrix (centred pixel coordinates, built by
:mod:`natgan.augment.ada_pipe`) in one step. Resampling does not leak: the image is reflect-padded as far
as the transformed corners need (at most side - 1), upsampled 2x with the 12-tap sym6 wavelet filter,
sampled bilinearly, and downsampled 2x with the same filter, so frequencies above Nyquist that
rotation/scaling would fold back are removed; with reflection the padding shows no seams D could use to
tell augmented images apart ("leak" the augmentation into G). :func:`blit` is the exact copy for
transforms that move pixel centres onto pixel centres (the pipe uses it instead of the filters).

Everything is differentiable w.r.t. the images to any order (``grid_sample`` wrapped so that its
backward is again differentiable, and the filters as small dense matrices per axis, or shifted slices
for large images), which R1 on augmented reals needs. Sampling positions are float32 for float32 images
(``grid_sample`` takes a grid of the image's dtype): an error of at most about 1e-7 of the padded
canvas's side, far below a pixel.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

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


def is_blit(g: torch.Tensor) -> torch.Tensor:
    """Per image: does the transform move pixel centres onto pixel centres (entries and shifts integral)?"""
    return ((g - torch.round(g)).abs().flatten(1).amax(1) < 1e-9)


# ------------------------------------------------------------------------------------ official mode
# stylegan2-ada-pytorch's geometric execution (training/augment.py with torch_utils/ops/upfirdn2d.py), written
# from its description: one group of images shares reflect margins wide enough for every image's corners;
# 2x upsampling by zero insertion, zero padding (6, 5) and *convolution* with 2 * sym6 / sum; bilinear
# ``grid_sample`` (zeros outside, ``align_corners=False``) on a grid with 3 extra pixels per side; 2x
# downsampling by cropping 1 pixel per side and *correlating* with sym6 / sum. The sym6 taps thus run in
# opposite orders in the two stages, and nothing compensates their group delay: mirrored transforms end
# up 0.098 px off the ideal one, which ``resample`` (the exact mode) avoids.
OFFICIAL_PAD = _TAPS // 4  # the official Hz_pad: 3 output pixels per side around the sampled grid


def _official_margins(g: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) reflect margins: the group's transformed pixel-centre corners plus twice
    the filter pad, clipped to [0, side - 1]."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    xs = torch.tensor([-cx, cx, cx, -cx], dtype=torch.float64).view(1, 4)
    ys = torch.tensor([-cy, -cy, cy, cy], dtype=torch.float64).view(1, 4)
    y_in, x_in = _map(g.double().cpu(), ys, xs)

    def side(extent: float, centre: float, limit: int) -> int:
        return int(math.ceil(min(max(extent + 2 * OFFICIAL_PAD - centre, 0.0), float(limit))))

    return (side(float((-x_in).max()), cx, w - 1), side(float(x_in.max()), cx, w - 1),
            side(float((-y_in).max()), cy, h - 1), side(float(y_in.max()), cy, h - 1))


def _conv_last_axis(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Correlation of every row (last axis) with ``taps``, 'valid' part only; differentiable to any order."""
    c = x.shape[1]
    weight = taps.to(x).view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(x, weight, groups=c)


def _official_up_last_axis(x: torch.Tensor) -> torch.Tensor:
    taps = _filter(torch.float64, "cpu") * 2                 # unit DC gain after zero insertion
    zeros = torch.zeros_like(x)
    inserted = torch.stack([x, zeros], dim=-1).flatten(-2)  # x[0], 0, x[1], 0, ...
    padded = F.pad(inserted, [(_TAPS + 1) // 2, (_TAPS - 2) // 2])
    return _conv_last_axis(padded, taps.flip(0))              # convolution = correlation with the reversed taps


def _official_down_last_axis(y: torch.Tensor) -> torch.Tensor:
    cropped = y[..., 1:-1]
    return _conv_last_axis(cropped, _filter(torch.float64, "cpu"))[..., ::2]


@functools.lru_cache(maxsize=256)
def _official_axis_matrix(kind: str, n: int, lo: int, hi: int) -> torch.Tensor:
    """float64 CPU matrix of one official 1-D stage, built by running it on the identity:
    ``("up", n, lo, hi)``: reflect-pad by lo/hi, then 2x up, [2 (n + lo + hi), n]; ``("down", n, 0, 0)``: [m, n]."""
    eye = torch.eye(n, dtype=torch.float64).view(1, 1, n, n)
    if kind == "up":
        padded = F.pad(eye.squeeze(0), [lo, hi], mode="reflect").unsqueeze(0) if lo or hi else eye
        return _official_up_last_axis(padded)[0, 0].T.contiguous()
    return _official_down_last_axis(eye)[0, 0].T.contiguous()


def _official_pad_up(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect-pad by (left, right, top, bottom), then the official 2x upsampling: dense matrices per axis
    for small images (several times faster on CPU), zero insertion and convolution otherwise."""
    h, w = x.shape[-2:]
    if max(h, w) <= DENSE_MAX:
        return _along_axes(x, _official_axis_matrix("up", h, pad[2], pad[3]),
                           _official_axis_matrix("up", w, pad[0], pad[1]))
    padded = F.pad(x, list(pad), mode="reflect") if any(pad) else x
    up = _official_up_last_axis(padded)
    return _official_up_last_axis(up.transpose(-1, -2)).transpose(-1, -2)


def _official_down(y: torch.Tensor) -> torch.Tensor:
    h, w = y.shape[-2:]
    if max(h, w) <= 2 * DENSE_MAX:
        return _along_axes(y, _official_axis_matrix("down", h, 0, 0), _official_axis_matrix("down", w, 0, 0))
    down = _official_down_last_axis(y)
    return _official_down_last_axis(down.transpose(-1, -2)).transpose(-1, -2)


def _t(tx: float, ty: float, n: int) -> torch.Tensor:
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _s(sx: float, sy: float, n: int) -> torch.Tensor:
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def resample_official(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """stylegan2-ada-pytorch's resampling of ``x`` [B, C, H, W] by the output -> input maps ``g`` [B, 3, 3]
    (centred pixel coordinates, as :func:`resample`), margins shared by the group; differentiable to any
    order w.r.t. ``x``. Matrices are float64 here (the official composes them in float32: differences of
    order 1e-7)."""
    b, _, h, w = x.shape
    g = g.double().cpu()
    mx0, mx1, my0, my1 = _official_margins(g, h, w)
    up = _official_pad_up(x, (mx0, mx1, my0, my1))
    m = _t((mx0 - mx1) / 2, (my0 - my1) / 2, b) @ g                          # origin of the padded image
    m = _s(2, 2, b) @ m @ _s(0.5, 0.5, b)                                      # upsampled pixel units
    m = _t(-0.5, -0.5, b) @ m @ _t(0.5, 0.5, b)
    out_h, out_w = (h + 2 * OFFICIAL_PAD) * 2, (w + 2 * OFFICIAL_PAD) * 2
    m = _s(2 / up.shape[3], 2 / up.shape[2], b) @ m @ _s(out_w / 2, out_h / 2, b)  # normalised [-1, 1] coords
    grid = F.affine_grid(m[:, :2, :], [b, x.shape[1], out_h, out_w], align_corners=False)
    sampled = _GridSample.apply(up, grid.to(device=x.device, dtype=x.dtype))
    return _official_down(sampled)
