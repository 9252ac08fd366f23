"""StyleGAN2: config-f parameter counts, modulated-conv maths, one CPU training step, mixing/truncation/noise."""

import math

import pytest
import torch
import torch.nn.functional as F

from natgan import recipe
from natgan.errors import ConfigError
from natgan.models import count_params, create, get_spec
from natgan.models.layers import make_kernel, upfirdn2d
from natgan.sampling import compute_w_avg
from natgan.models.stylegan2 import StyleGAN2Generator
from natgan.models.stylegan2_layers import ModulatedConv2d, StyleGAN2Discriminator, channels_for

TINY = dict(resolution=16, style_dim=16, n_mlp=2, channel_max=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    return create("stylegan2", **{**TINY, **overrides})


# ------------------------------------------------------------------------------------------ sizes

def test_config_f_256_parameter_counts():
    with torch.device("meta"):
        pair = create("stylegan2")
    g, d = count_params(pair.generator), count_params(pair.discriminator)
    assert g == 30_034_338   # = rosinality Generator(256, 512, 8, channel_multiplier=2)
    assert d == 28_864_129   # = rosinality Discriminator(256, channel_multiplier=2)
    paper = get_spec("stylegan2").paper_params_g
    assert abs(g / 1e6 - paper) / paper < 0.005
    assert [channels_for(2 ** i, 2) for i in range(2, 9)] == [512, 512, 512, 512, 512, 256, 128]
    assert pair.generator.n_latent == 14 and pair.generator.normalization == "symmetric"


def test_state_dict_uses_rosinality_names():
    keys = set(tiny().generator.state_dict())
    for key in ("style.1.weight", "input.input", "conv1.conv.weight", "conv1.conv.modulation.bias",
                "conv1.noise.weight", "conv1.activate.bias", "to_rgb1.bias", "convs.0.conv.blur.kernel",
                "to_rgbs.0.upsample.kernel",
                "noises.noise_0", "noises.noise_4"):
        assert key in keys, key
    assert tiny().generator.conv1.conv.weight.shape == (1, 16, 16, 3, 3)


@pytest.mark.parametrize("overrides, message", [
    (dict(resolution=24), "model.resolution"),
    (dict(blur_kernel=[1]), "model.blur_kernel"),
    (dict(channel_multiplier=0), "model.channel_multiplier"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**overrides)


# ------------------------------------------------------------------------------------------ modulated conv

def reference_modconv(layer: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The paper's per-sample weights: w'_ijk = s_i w_ijk, w'' = w' / sqrt(sum w'^2 + eps), grouped conv."""
    b = x.shape[0]
    s = layer.modulation(style)
    w = layer.weight * layer.scale * s.view(b, 1, -1, 1, 1)                       # [B, out, in, k, k]
    if layer.demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    k = layer.kernel_size
    if layer.upsample:
        # zero-insertion x2 + convolution with the flipped kernel == transposed conv, then the FIR blur
        up = x.new_zeros(b, x.shape[1], x.shape[2] * 2, x.shape[3] * 2)
        up[:, :, ::2, ::2] = x
        up = F.pad(up, [k - 1, k - 2, k - 1, k - 2])
        out = F.conv2d(up.reshape(1, -1, *up.shape[2:]), w.flip(3, 4).reshape(-1, x.shape[1], k, k), groups=b)
        out = out.view(b, -1, *out.shape[2:])
        return upfirdn2d(out, make_kernel([1, 3, 3, 1]) * 4, pad=(1, 1))
    out = F.conv2d(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, x.shape[1], k, k), padding=k // 2, groups=b)
    return out.view(b, -1, *out.shape[2:])


@pytest.mark.parametrize("demodulate, upsample, kernel", [(True, False, 3), (False, False, 1), (True, True, 3)])
def test_modulated_conv_equals_per_sample_weights(demodulate, upsample, kernel):
    layer = ModulatedConv2d(6, 5, kernel, style_dim=7, demodulate=demodulate, upsample=upsample)
    with torch.no_grad():
        layer.modulation.bias.normal_()
    x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 7)
    out = layer(x, style)
    assert out.shape == (3, 5, 16 if upsample else 8, 16 if upsample else 8)
    torch.testing.assert_close(out, reference_modconv(layer, x, style), atol=1e-5, rtol=1e-5)


def test_demodulation_normalises_output_scale():
    """With unit-variance i.i.d. input, demodulated outputs have ~unit std whatever the style magnitude."""
    layer = ModulatedConv2d(64, 64, 3, style_dim=8)
    x = torch.randn(4, 64, 16, 16)
    for gain in (0.1, 10.0):
        with torch.no_grad():
            std = layer(x, torch.randn(4, 8) * gain)[:, :, 1:-1, 1:-1].std().item()
        assert 0.8 < std < 1.2


# ------------------------------------------------------------------------------------------ training step

def test_one_training_step_reaches_every_parameter():
    pair = tiny()
    G, D = pair.generator.train(), pair.discriminator.train()
    assert isinstance(G, StyleGAN2Generator) and isinstance(D, StyleGAN2Discriminator)
    z, real = torch.randn(4, 16), torch.rand(4, 3, 16, 16) * 2 - 1

    # generator step: non-saturating loss through D; the noise strengths start at 0, and the gradient of
    # strength * noise w.r.t. the strength is the noise itself, so they are reached from step one.
    g_loss = F.softplus(-D(G(z))).mean()
    g_loss.backward()
    assert torch.isfinite(g_loss)
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(not hasattr(b, "grad") or b.grad is None for b in G.buffers())

    D.zero_grad()
    d_loss = F.softplus(D(G(z).detach())).mean() + F.softplus(-D(real)).mean()
    d_loss.backward()
    assert torch.isfinite(d_loss)
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_path_length_gradient_flows_through_w():
    G = tiny().generator
    w = G.mapping(torch.randn(2, 16)).detach().requires_grad_(True)
    img = G.synthesis(w)
    (grad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), w, create_graph=True)
    assert grad.shape == w.shape and grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ contract

def test_generator_contract_truncation_and_mixing():
    G = tiny().generator.eval()
    G.noise_mode = "const"
    assert (G.z_dim, G.resolution, G.n_latent) == (16, 16, 6)
    z1, z2 = torch.randn(3, 16), torch.randn(3, 16)
    with torch.no_grad():
        w1, w2 = G.mapping(z1), G.mapping(z2)
        assert w1.shape == (3, 6, 16) and torch.equal(w1[:, 0], w1[:, 5])
        img1, img2 = G.synthesis(w1), G.synthesis(w2)
        assert img1.shape == (3, 3, 16, 16)
        torch.testing.assert_close(G(z1, psi=1.0), img1)                      # psi = 1 is the identity
        w_avg = compute_w_avg(G, num=256)
        assert w_avg.shape == (6, 16)
        centre = G(z1, psi=0.0, w_avg=w_avg)                                  # psi = 0 collapses to the centre
        torch.testing.assert_close(centre, centre[:1].expand_as(centre))
        half = G(z1, psi=0.5, w_avg=w_avg)
        torch.testing.assert_close(half, G.synthesis(w_avg + 0.5 * (w1 - w_avg)))
        # style mixing swaps rows: coarse rows from z1, fine rows from z2
        for cut in (1, 3, 5):
            mixed = G.synthesis(torch.cat([w1[:, :cut], w2[:, cut:]], dim=1))
            assert not torch.allclose(mixed, img1) and not torch.allclose(mixed, img2)
        torch.testing.assert_close(G.synthesis(torch.cat([w1[:, :0], w2[:, 0:]], dim=1)), img2)
        # every row is read by some layer
        for row in range(G.n_latent):
            w = w1.clone()
            w[:, row] = w2[:, row]
            assert not torch.allclose(G.synthesis(w), img1), row


def test_noise_modes():
    G = tiny().generator.eval()
    with torch.no_grad():
        for mod in G.modules():
            if mod.__class__.__name__ == "NoiseInjection":
                mod.weight.fill_(0.5)
        w = G.mapping(torch.randn(2, 16))
        const_a, const_b = G.synthesis(w, noise_mode="const"), G.synthesis(w, noise_mode="const")
        rand_a, rand_b = G.synthesis(w, noise_mode="random"), G.synthesis(w, noise_mode="random")
        none = G.synthesis(w, noise_mode="none")
    torch.testing.assert_close(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(none, const_a)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(w, noise_mode="fixed")


def test_discriminator_shape_and_odd_batch():
    D = tiny().discriminator
    assert D(torch.randn(3, 3, 16, 16)).shape == (3, 1)   # 3 is not a multiple of the stddev group: falls back


def test_recipe_loads_and_builds_config_f():
    r = recipe.load("recipes/stylegan2_ffhq256.toml")
    assert r.model_name == "stylegan2" and r.model.channel_multiplier == 2
    t = r.train
    assert (t.batch, t.g_lr, t.d_lr, t.ttur, t.r1, t.r1_every) == (32, 0.002, 0.002, False, 10.0, 16)
    assert (t.style_mixing, t.pl_weight, t.g_reg_every, t.bcr) == (0.9, 2.0, 4, False)
    assert t.ema_beta == pytest.approx(0.5 ** (32 / 10_000))
    assert t.iterations * t.batch == 25_000_000
    with torch.device("meta"):
        assert count_params(create("stylegan2", r.model).generator) == 30_034_338
    assert math.isclose(r.eval.num, 50_000)
