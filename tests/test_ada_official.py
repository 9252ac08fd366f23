"""ADA against stylegan2-ada-pytorch's own behaviour, re-derived here from its code (training/augment.py,
torch_utils/ops/upfirdn2d.py, training/training_loop.py at d72cc7d), not by calling nat-gan twice:
its G_inv composition for injected parameters, its geometric execution written with the reference
``upfirdn2d`` semantics (zero insertion, padding, a 2-D filter, convolution vs correlation), and its p update."""

import math

import pytest
import torch
import torch.nn.functional as F

from natgan.augment import ada_controller, ada_pipe
from natgan.augment.ada_resample import resample, resample_official

SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633, 0.4910559419267466,
        0.787641141030194, 0.3379294217276218, -0.07263752278646252, -0.021060292512300564, 0.04472490177066578,
        0.0017677118642428036, -0.007800708325034148]


def _m(rows):
    return torch.tensor(rows, dtype=torch.float64)


def translate(tx, ty):
    return _m([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def scale(sx, sy):
    return _m([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def rotate(theta):
    c, s = math.cos(theta), math.sin(theta)
    return _m([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def official_g_inv(flip, k, tint, s, theta1, sa, theta2, tfrac, h, w):
    """The official composition, each factor its ``*_inv`` function: G_inv = I @ scale2d_inv(1 - 2i, 1) @
    rotate2d_inv(-pi/2 k) @ translate2d_inv(round(t w), round(t h)) @ scale2d_inv(s, s) @ rotate2d_inv(-theta)
    @ scale2d_inv(s, 1/s) @ rotate2d_inv(-theta) @ translate2d_inv(t w, t h)."""
    g = scale(1 / (1 - 2 * flip), 1.0) @ rotate(math.pi / 2 * k) @ translate(-round(tint[0] * w), -round(tint[1] * h))
    g = g @ scale(1 / s, 1 / s) @ rotate(theta1) @ scale(1 / sa, sa) @ rotate(theta2)
    return g @ translate(-tfrac[0] * w, -tfrac[1] * h)


def official_geometry(x, g_inv):
    """The official 'Execute geometric transformations' block for one group of images, in float64."""
    b, c, h, w = x.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    corners = _m([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]])
    cp = g_inv @ corners.T
    margin = cp[:, :2, :].permute(1, 0, 2).flatten(1)
    margin = torch.cat([-margin, margin]).max(dim=1).values + _m([6 - cx, 6 - cy] * 2)
    margin = torch.minimum(margin.clamp(min=0), _m([w - 1, h - 1] * 2))
    mx0, my0, mx1, my1 = [int(v) for v in margin.ceil()]
    x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
    g = translate((mx0 - mx1) / 2, (my0 - my1) / 2) @ g_inv
    f1 = _m(SYM6) / sum(SYM6)
    f2 = torch.outer(f1, f1)                                   # the separable filter as one 2-D kernel
    # upsample2d(up=2): zero insertion, padding (6, 5), gain 4, convolution (= correlation with the flip)
    z = torch.zeros(b, c, 2 * x.shape[2], 2 * x.shape[3], dtype=x.dtype)
    z[:, :, ::2, ::2] = x
    z = F.pad(z, [6, 5, 6, 5])
    up = F.conv2d(z, (f2 * 4).flip([0, 1]).expand(c, 1, 12, 12), groups=c)
    g = scale(2, 2) @ g @ scale(0.5, 0.5)
    g = translate(-0.5, -0.5) @ g @ translate(0.5, 0.5)
    out_h, out_w = (h + 6) * 2, (w + 6) * 2
    g = scale(2 / up.shape[3], 2 / up.shape[2]) @ g @ scale(out_w / 2, out_h / 2)
    grid = F.affine_grid(g[:, :2, :], [b, c, out_h, out_w], align_corners=False)
    sampled = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # downsample2d(down=2, padding=-6, flip_filter=True): crop 1 per side, correlation, every 2nd pixel
    down = F.conv2d(sampled[:, :, 1:-1, 1:-1], f2.expand(c, 1, 12, 12), groups=c)
    return down[:, :, ::2, ::2]


class ScriptedDraw(ada_pipe.Draw):
    """Injected parameters: every augmentation fires, and the values come from a list in draw order."""

    def __init__(self, values):
        super().__init__(1, torch.Generator(), 1.0)
        self.values = list(values)

    def mask(self, name, prob=None):
        self.fired[name] = torch.ones(1, dtype=torch.bool)
        return torch.ones(1, dtype=torch.bool)

    def _next(self):
        return torch.tensor([self.values.pop(0)], dtype=torch.float64)

    uniform = normal = _next

    def integer(self, high):
        return self._next().long()


def smooth_and_noisy(h, w, seed=0):
    y, x = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                          torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    base = torch.stack([torch.sin(3 * x + 1), torch.cos(2 * y), x * y]) * 0.8
    noise = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    return torch.stack([base, noise])


# (xflip i, rot90 k, xint t (uniform draws: t = (u * 2 - 1) / 8), scale s, rotation theta, aniso s, theta, xfrac t)
CASES = [
    (1, 0, (0.5, 0.5), 1.0, 0.0, 1.0, 0.0, (0.0, 0.0)),              # a flip alone
    (0, 1, (0.5, 0.5), 1.0, 0.0, 1.0, 0.0, (0.0, 0.0)),              # a quarter turn alone
    (0, 0, (0.9, 0.2), 1.0, 0.0, 1.0, 0.0, (0.0, 0.0)),              # an integer shift alone
    (1, 3, (0.1, 0.7), 1.17, 0.4, 0.87, -1.3, (0.05, -0.11)),        # everything at once
    (0, 2, (0.6, 0.45), 0.8, 2.9, 1.2, 0.2, (-0.2, 0.08)),
]


@pytest.mark.parametrize("case", CASES)
def test_official_mode_equals_the_official_pipe_on_injected_parameters(case):
    flip, k, u, s, theta1, sa, theta2, tfrac = case
    h, w = 24, 20
    tint = ((u[0] * 2 - 1) * 0.125, (u[1] * 2 - 1) * 0.125)
    expected_g = official_g_inv(flip, k, tint, s, theta1, sa, theta2, tfrac, h, w)
    # nat-gan's draws in its order: xflip i; rot90 k; xint u, u; scale log2 s / 0.2; rotate u; aniso; rotate u; xfrac
    draws = [flip, k, u[0], u[1], math.log2(s) / 0.2, (theta1 / math.pi + 1) / 2, math.log2(sa) / 0.2,
             (theta2 / math.pi + 1) / 2, tfrac[0] / 0.125, tfrac[1] / 0.125]
    g = ada_pipe.geometric_matrix(ada_pipe.GEOMETRIC, ScriptedDraw(draws), h, w)
    torch.testing.assert_close(g[0], expected_g, rtol=0, atol=1e-12)

    images = smooth_and_noisy(h, w)
    expected = official_geometry(images, expected_g.expand(2, 3, 3))
    torch.testing.assert_close(resample_official(images, g.expand(2, 3, 3)), expected, rtol=0, atol=1e-12)
    assert (expected - resample(images, g.expand(2, 3, 3))).abs().max() > 1e-3 or (flip, k, s, sa) == (0, 0, 1, 1)


@pytest.mark.parametrize("pipe_name", ["bg", "bgc", "blit"])
def test_the_pipe_in_official_mode_is_the_official_execution_of_its_draws(pipe_name):
    """At p = 1 every image's geometry fires and the group is resampled together, as the official batch."""
    h = w = 16
    images = smooth_and_noisy(h, w).repeat(3, 1, 1, 1)
    ops = ada_pipe.PIPELINES[pipe_name]
    out = ada_pipe.AugmentPipe(pipe_name)(images, 1.0, torch.Generator().manual_seed(4))
    draw = ada_pipe.Draw(len(images), torch.Generator().manual_seed(4), 1.0)        # the same draws, replayed
    g = ada_pipe.geometric_matrix(tuple(op for op in ops if op in ada_pipe.GEOMETRIC), draw, h, w)
    expected = official_geometry(images, g)
    if "brightness" in ops:
        c = ada_pipe.colour_matrix(ada_pipe.COLOUR, draw)
        expected = torch.einsum("bij,bjhw->bihw", c[:, :3, :3], expected) + c[:, :3, 3].view(-1, 3, 1, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    exact = ada_pipe.AugmentPipe(pipe_name, resample="exact")(images, 1.0, torch.Generator().manual_seed(4))
    assert (exact - out).abs().max() > 1e-3          # the exact mode is a different resampling


def official_p_trajectory(p, rts, *, target, batch, interval, kimg):
    """training_loop.py: every ``interval`` steps p += sign(r_t - target) * batch * interval / (kimg * 1000),
    then p = max(p, 0) (no upper clamp)."""
    out = []
    for rt in rts:
        p = max(p + math.copysign(1.0, rt - target) * (rt != target) * batch * interval / (kimg * 1000), 0.0)
        out.append(p)
    return out


def test_p_follows_the_official_rule_through_saturation():
    """A run where D overfits for 220 adjustments (p climbs past 1), then stops (p comes back), then sits at
    the target: every adjustment equals the official rule's."""
    batch, interval, kimg, target = 40, 4, 5.0, 0.6
    rts = [1.0] * 220 + [0.0] * 60 + [0.5] * 10 + [target] * 10
    expected = official_p_trajectory(0.0, rts, target=target, batch=batch, interval=interval, kimg=kimg)
    ctl = ada_controller.AdaController(p=0.0, target=target, interval=interval, kimg=kimg, adaptive=True)
    ours = []
    for rt in rts:
        positive = round((rt + 1) / 2 * batch)         # logits whose mean sign is rt
        logits = torch.cat([torch.ones(positive, 1), -torch.ones(batch - positive, 1)])
        for _ in range(interval):
            ctl.observe(logits)
            ctl.after_step(batch)
        ours.append(ctl.p)
    assert max(expected) > 5                              # saturated far past 1 ...
    assert ours == pytest.approx(expected, rel=0, abs=1e-12)
    assert expected[-1] == expected[-11]                 # ... and r_t == target leaves p alone


# ------------------------------------------------------------------------------------------- DiffAugment
def official_diffaugment(x, policy):
    """data-efficient-gans DiffAugment_pytorch.py re-derived: every random number from torch's global RNG in
    the images' dtype, in this order; translation reads the zero-padded image at (y + ty + 1, x + tx + 1)."""
    b, _, h, w = x.shape
    for group in policy.split(","):
        if group == "color":
            x = x + (torch.rand(b, 1, 1, 1, dtype=x.dtype) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (torch.rand(b, 1, 1, 1, dtype=x.dtype) * 2) + mean
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * (torch.rand(b, 1, 1, 1, dtype=x.dtype) + 0.5) + mean
        elif group == "translation":
            sy, sx = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
            ty = torch.randint(-sy, sy + 1, size=[b, 1, 1])
            tx = torch.randint(-sx, sx + 1, size=[b, 1, 1])
            gb, gy, gx = torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij")
            gy = torch.clamp(gy + ty + 1, 0, h + 1)
            gx = torch.clamp(gx + tx + 1, 0, w + 1)
            padded = F.pad(x, [1, 1, 1, 1])
            x = padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)
        elif group == "cutout":
            ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
            oy = torch.randint(0, h + (1 - ch % 2), size=[b, 1, 1])
            ox = torch.randint(0, w + (1 - cw % 2), size=[b, 1, 1])
            gb, gy, gx = torch.meshgrid(torch.arange(b), torch.arange(ch), torch.arange(cw), indexing="ij")
            gy = torch.clamp(gy + oy - ch // 2, min=0, max=h - 1)
            gx = torch.clamp(gx + ox - cw // 2, min=0, max=w - 1)
            mask = torch.ones(b, h, w, dtype=x.dtype)
            mask[gb, gy, gx] = 0
            x = x * mask.unsqueeze(1)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("policy", ["color,translation,cutout", "translation", "cutout,color"])
def test_diffaugment_is_bit_identical_to_the_official_for_the_same_seed(dtype, policy):
    from natgan.augment.diffaugment import diff_augment, parse_policy

    x = torch.rand(6, 3, 20, 16, generator=torch.Generator().manual_seed(1), dtype=dtype) * 2 - 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        expected = official_diffaugment(x, policy)
    ours = diff_augment(x, parse_policy(policy), torch.Generator().manual_seed(123))
    assert ours.dtype == dtype and torch.equal(ours, expected)
