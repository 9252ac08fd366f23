"""ADA's augmentations (Karras et al. 2020, App. B/C), its adaptive p, DiffAugment and the D-augmentation wrapper."""

import math

import pytest
import torch

from natgan.errors import ConfigError
from natgan import augment
from natgan.augment import ada_controller, ada_pipe, ada_resample, diffaugment

B = 64


def known_image(b=1, h=8, w=8, seed=0):
    """Distinct values everywhere, so any misplaced pixel shows."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, h, w, generator=g, dtype=torch.float64) * 2 - 1).repeat(b, 1, 1, 1)


def reflect_shift(x, dy, dx):
    """Reference: image shifted by (dy, dx) whole pixels with reflected borders, written with F.pad."""
    h, w = x.shape[-2:]
    p = torch.nn.functional.pad(x, [w - 1] * 2 + [h - 1] * 2, mode="reflect")
    return p[..., h - 1 - dy: 2 * h - 1 - dy, w - 1 - dx: 2 * w - 1 - dx]


def test_xflip_mirrors_and_only_mirrors():
    x = known_image(B)
    y = ada_pipe.AugmentPipe.of("xflip", resample="exact")(x, 1.0, torch.Generator().manual_seed(1))
    flipped = [torch.equal(a, x[0].flip(2)) for a in y]
    same = [torch.equal(a, x[0]) for a in y]
    assert all(f or s for f, s in zip(flipped, same))
    assert 16 < sum(flipped) < 48  # i ~ U{0, 1}


def test_rotate90_is_exactly_invertible():
    x = known_image(B)
    y = ada_pipe.AugmentPipe.of("rotate90", resample="exact")(x, 1.0, torch.Generator().manual_seed(2))
    ks = []
    for a in y:
        k = next(k for k in range(4) if torch.equal(a, torch.rot90(x[0], k, dims=(1, 2))))
        assert torch.equal(torch.rot90(a, -k, dims=(1, 2)), x[0])
        ks.append(k)
    assert set(ks) == {0, 1, 2, 3}


def test_integer_translation_is_an_exact_reflected_shift_within_an_eighth():
    x = known_image(B, 16, 16)
    y = ada_pipe.AugmentPipe.of("xint", resample="exact")(x, 1.0, torch.Generator().manual_seed(3))
    shifts = set()
    for a in y:
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(a, reflect_shift(x[0], dy, dx))]
        assert found, "not a whole-pixel reflected shift of at most round(0.125 * 16) = 2"
        shifts.add(found[0])
    assert len(shifts) > 10


def replay(seed, n=B):
    return torch.Generator().manual_seed(seed)


def test_colour_ops_match_hand_computed_values():
    x = known_image(B).float()
    luma = x.mean(1, keepdim=True)
    # each op alone, p = 1; parameters replayed from the same generator in the op's draw order
    g = replay(4)
    b = torch.randn(B, generator=g, dtype=torch.float64) * 0.2
    y = ada_pipe.AugmentPipe.of("brightness")(x, 1.0, replay(4))
    torch.testing.assert_close(y, x + b.float().view(-1, 1, 1, 1))

    g = replay(5)
    c = torch.exp2(torch.randn(B, generator=g, dtype=torch.float64) * 0.5)
    y = ada_pipe.AugmentPipe.of("contrast")(x, 1.0, replay(5))
    torch.testing.assert_close(y, x * c.float().view(-1, 1, 1, 1))

    g = replay(6)
    i = torch.randint(2, (B,), generator=g).float().view(-1, 1, 1, 1)
    y = ada_pipe.AugmentPipe.of("lumaflip")(x, 1.0, replay(6))
    torch.testing.assert_close(y, x - 2 * i * luma)  # reflect along the grey axis: luma -> -luma

    g = replay(7)
    s = torch.exp2(torch.randn(B, generator=g, dtype=torch.float64) * 1.0).float().view(-1, 1, 1, 1)
    y = ada_pipe.AugmentPipe.of("saturation")(x, 1.0, replay(7))
    torch.testing.assert_close(y, luma + (x - luma) * s)

    # hue: rotation about the grey axis keeps luma and chroma length; 120 degrees permutes r -> g -> b
    y = ada_pipe.AugmentPipe.of("hue")(x, 1.0, replay(8))
    torch.testing.assert_close(y.mean(1), x.mean(1).expand_as(y.mean(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close((y - y.mean(1, keepdim=True)).norm(dim=1), (x - luma).norm(dim=1), atol=1e-5, rtol=0)
    rot = ada_pipe.rotate3d(ada_pipe.luma_axis(), torch.tensor([2 * math.pi / 3], dtype=torch.float64))
    rgb = torch.tensor([0.9, -0.2, 0.1, 1.0], dtype=torch.float64)
    torch.testing.assert_close(rot[0] @ rgb, rgb[[2, 0, 1, 3]])


def test_colour_parameters_follow_the_paper_distributions():
    draw = ada_pipe.Draw(20000, torch.Generator().manual_seed(9), 1.0)
    c = ada_pipe.colour_matrix(("brightness",), draw)
    assert abs(float(c[:, 0, 3].std()) - 0.2) < 0.01
    draw = ada_pipe.Draw(20000, torch.Generator().manual_seed(9), 1.0)
    c = ada_pipe.colour_matrix(("contrast",), draw)
    assert abs(float(torch.log2(c[:, 0, 0]).std()) - 0.5) < 0.02
    draw = ada_pipe.Draw(20000, torch.Generator().manual_seed(9), 0.25)
    ada_pipe.colour_matrix(("saturation",), draw)
    assert abs(float(draw.fired["saturation"].double().mean()) - 0.25) < 0.02


def test_composed_geometric_transform_is_the_product_of_its_parts():
    ops = ada_pipe.PIPELINES["bg"]
    g = ada_pipe.geometric_matrix(ops, ada_pipe.Draw(8, replay(10), 1.0), 16, 16)
    draw = ada_pipe.Draw(8, replay(10), 1.0)
    product = torch.eye(3, dtype=torch.float64).repeat(8, 1, 1)
    for name in ada_pipe.GEOMETRIC_ORDER:
        product = product @ ada_pipe._geometric_part(name, draw, 16, 16)
    assert torch.equal(g, product)
    # pixel-blitting parts: one resampling with the product = applying the parts one after another
    x = known_image(8, 16, 16)
    draw = ada_pipe.Draw(8, replay(11), 1.0)
    parts = [ada_pipe._geometric_part(name, draw, 16, 16) for name in ada_pipe.BLIT]
    composed = parts[0] @ parts[1] @ parts[2]
    step_by_step = x
    for m in parts:  # out->in maps: blit(blit(x, A), B)(p) = x(A B p)
        step_by_step = ada_resample.blit(step_by_step, m)
    # equal wherever no intermediate image had to be reflected (shifts are at most 2 pixels)
    assert torch.equal(ada_resample.blit(x, composed)[..., 2:-2, 2:-2], step_by_step[..., 2:-2, 2:-2])
    # general parts: two resamplings ~ one with the product (away from the borders)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = torch.stack([torch.sin(xx / 4), torch.cos(yy / 5), torch.sin((xx + yy) / 6)])[None].double()
    rot = ada_pipe.rotate2d(torch.tensor([0.3], dtype=torch.float64))
    scale = ada_pipe.scale2d(torch.tensor([1.1], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64))
    once = ada_resample.resample(smooth, scale @ rot)
    twice = ada_resample.resample(ada_resample.resample(smooth, scale), rot)
    assert (once - twice)[..., 8:-8, 8:-8].abs().max() < 0.02


def test_resampling_has_no_offset_and_no_aliasing_artefacts():
    x = known_image(2, 16, 16)
    identity = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    torch.testing.assert_close(ada_resample.resample(x, identity), x, atol=1e-6, rtol=0)  # sym6 is orthogonal
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = torch.sin(xx / 3 + yy / 7)[None, None].repeat(1, 3, 1, 1).double()
    flip = ada_pipe.scale2d(torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    # the filtered path agrees with the exact one on a mirror (the filters' group delay is compensated)
    assert (ada_resample.resample(smooth, flip) - ada_resample.blit(smooth, flip))[..., 4:-4, 4:-4].abs().max() < 0.01
    # a half-pixel shift (output p samples input p + 1/2) lands between pixels, on the true values
    half = ada_pipe.translate2d(torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    expected = torch.sin((xx + 0.5) / 3 + yy / 7)
    assert (ada_resample.resample(smooth, half)[0, 0] - expected)[4:-4, 4:-4].abs().max() < 0.01


def test_p_zero_is_the_exact_identity():
    x = known_image(8).float()
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert ada_pipe.AugmentPipe("bgc")(x, 0.0, gen) is x
    assert torch.equal(gen.get_state(), state)  # nothing drawn
    aug = augment.AdaAugment(pipe="bgc", p=0.0, target=0.6, interval=4, kimg=500, adaptive=True,
                          normalization="imagenet", generator=gen)
    assert aug(x) is x
    assert augment.DAugment.none()(x) is x
    # at small p, images nothing fired on are returned bit for bit
    y = ada_pipe.AugmentPipe("bgc")(known_image(64).float(), 0.02, torch.Generator().manual_seed(1))
    assert sum(torch.equal(a, known_image(1).float()[0]) for a in y) > 30


@pytest.mark.parametrize("resample", ["official", "exact"])
@pytest.mark.parametrize("name", ["bgc", "blit", "geom", "color"])
def test_gradients_flow_to_fakes_to_second_order(name, resample):
    x = (known_image(4, 8, 8)).requires_grad_(True)
    pipe = ada_pipe.AugmentPipe(name, resample=resample)
    # for a fixed draw the pipe is affine in x: autograd's directional derivative = finite difference
    f = lambda t: pipe(t, 1.0, torch.Generator().manual_seed(5))  # noqa: E731
    direction, weights = torch.randn_like(x), torch.randn_like(x)
    (g,) = torch.autograd.grad((f(x) * weights).sum(), x)
    numeric = ((f(x + 1e-3 * direction) - f(x - 1e-3 * direction)) * weights).sum() / 2e-3
    torch.testing.assert_close((g * direction).sum(), numeric, rtol=1e-6, atol=1e-8)
    assert g.abs().sum() > 0
    D = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Softplus(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 36, 1)).double()
    logits = D(pipe(x, 1.0, torch.Generator().manual_seed(5)))
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)  # R1 through the augmentation
    assert grad.abs().sum() > 0
    grad.pow(2).sum().backward()
    assert D[0].weight.grad.abs().sum() > 0


def test_adaptive_rule_moves_p_at_the_papers_rate():
    ctl = ada_controller.AdaController(p=0.5, target=0.6, interval=4, kimg=500.0, adaptive=True)
    rate = 64 * 4 / (500 * 1000)
    for _ in range(3):
        ctl.observe(torch.ones(64, 1))
        ctl.after_step(64)
    assert ctl.p == 0.5  # only every `interval` steps
    ctl.observe(torch.ones(64, 1))
    ctl.after_step(64)
    assert ctl.rt == 1.0 and ctl.p == pytest.approx(0.5 + rate, abs=1e-15)
    for _ in range(4):  # r_t = 0.5 < 0.6: down
        ctl.observe(torch.tensor([[1.0], [1.0], [1.0], [-1.0]] * 16))
        ctl.after_step(64)
    assert ctl.rt == 0.5 and ctl.p == pytest.approx(0.5, abs=1e-15)
    # 0 -> 1 takes ada_kimg thousand images; p is clamped at 0 only (see test_ada_official.py)
    ctl = ada_controller.AdaController(p=0.0, target=0.6, interval=4, kimg=1.0, adaptive=True)
    for _ in range(1000 // 64 * 4 + 8):
        ctl.observe(torch.ones(64, 1))
        ctl.after_step(64)
    assert ctl.p == pytest.approx(64 * 4 / 1000 * ((1000 // 64 * 4 + 8) // 4))
    fixed = ada_controller.AdaController(p=0.3, target=0.6, interval=1, kimg=1.0, adaptive=False)
    fixed.observe(torch.ones(4, 1))
    fixed.after_step(4)
    assert fixed.p == 0.3 and fixed.rt == 1.0


def test_augmentation_works_in_the_models_space():
    """ImageNet-normalised models are augmented in [-1, 1] and mapped back: brightness moves all
    channels by the same amount of *RGB*, not of normalised units."""
    from natgan.models.normalization import from_unit, to_unit

    unit = torch.rand(4, 3, 8, 8) * 0.5 + 0.25
    x = from_unit(unit, "imagenet")
    aug = augment.AdaAugment(pipe="color", p=1.0, target=0.6, interval=4, kimg=500, adaptive=False,
                          normalization="imagenet", generator=torch.Generator().manual_seed(0))
    aug.pipe = ada_pipe.AugmentPipe.of("brightness")
    y = to_unit(aug(x), "imagenet")
    delta = y - unit
    torch.testing.assert_close(delta, delta[:, :1, :1, :1].expand_as(delta), atol=1e-5, rtol=0)


def test_diffaugment_policy_and_errors():
    x = known_image(4, 16, 16).float()
    y = diffaugment.diff_augment(x, diffaugment.parse_policy("cutout"), torch.Generator().manual_seed(0))
    zeroed = (y == 0).all(1).flatten(1).sum(1)
    assert (zeroed >= 16).all()  # at least a quarter-image square (clipped at the border) of 8x8 = 64 max
    aug = augment.DiffAugment("color,translation,cutout", normalization="symmetric",
                           generator=torch.Generator().manual_seed(0))
    assert aug(x).shape == x.shape and not torch.equal(aug(x), x)
    with pytest.raises(ConfigError, match="train.diffaug_policy"):
        diffaugment.parse_policy("color,zoom")
    with pytest.raises(ConfigError, match="train.augment_pipe"):
        ada_pipe.pipeline("bgcfnc")


def test_dense_and_sliced_filters_are_the_same_resampling(monkeypatch):
    """Small images run the sym6 filters as dense matrices per axis, large ones as shifted slices."""
    x = known_image(3, 12, 10)
    g = ada_pipe.geometric_matrix(ada_pipe.PIPELINES["bg"], ada_pipe.Draw(3, replay(21), 1.0), 12, 10)
    pad = ada_resample._padding(g, 12, 10)
    dense_up, dense = ada_resample.pad_upsample2x(x, pad), ada_resample.resample(x, g)
    monkeypatch.setattr(ada_resample, "DENSE_MAX", 0)
    sliced_up = ada_resample.upsample2x(torch.nn.functional.pad(x, list(pad), mode="reflect"))
    torch.testing.assert_close(dense_up, ada_resample.pad_upsample2x(x, pad), rtol=0, atol=1e-12)
    torch.testing.assert_close(dense_up, sliced_up, rtol=0, atol=1e-12)
    torch.testing.assert_close(dense, ada_resample.resample(x, g), rtol=0, atol=1e-12)


def test_resampling_is_differentiable_twice_exactly():
    x = known_image(2, 7, 9).requires_grad_(True)
    g = ada_pipe.geometric_matrix(ada_pipe.PIPELINES["geom"], ada_pipe.Draw(2, replay(22), 1.0), 7, 9)
    assert torch.autograd.gradcheck(lambda t: ada_resample.resample(t, g), (x,))
    assert torch.autograd.gradgradcheck(lambda t: ada_resample.resample(t, g), (x,))


def test_the_pipe_computes_in_float32_under_autocast_and_keeps_the_dtype():
    """bf16 training: the augmentation is not rounded to bf16 inside (filters, sampling positions)."""
    x = known_image(4, 16, 16).float()
    reference = ada_pipe.AugmentPipe("bgc")(x, 1.0, torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = ada_pipe.AugmentPipe("bgc")(x, 1.0, torch.Generator().manual_seed(3))
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, reference, rtol=0, atol=1e-6)
    half = ada_pipe.AugmentPipe("bgc")(x.bfloat16(), 1.0, torch.Generator().manual_seed(3))
    assert half.dtype == torch.bfloat16
    # only the input and the output are rounded: far closer than a bf16 pipeline (~1e-2) would be
    torch.testing.assert_close(half.float(), ada_pipe.AugmentPipe("bgc")(x.bfloat16().float(), 1.0,
                               torch.Generator().manual_seed(3)).bfloat16().float(), rtol=0, atol=0)
