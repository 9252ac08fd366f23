"""GANformer: official parameter counts, one CPU training step per attention form, how the bipartite
attention moves information (latents -> every image position; image -> latent keys in duplex), capture."""

import math

import pytest
import torch
import torch.nn.functional as F

from natgan import recipe
from natgan.errors import ConfigError
from natgan.models import count_params, create
from natgan.models.ganformer import GANformerGenerator
from natgan.models.ganformer_attention import ImageLatentAttention, LatentSelfAttention, sinusoidal_grid
from natgan.sampling import compute_w_avg

# 4 px (attention) -> 8 px (attention) -> 16 px (no attention, conv_last + ToRGB); 4 local + 1 global latent.
TINY = dict(resolution=16, components=4, latent_dim=8, channel_max=16, attn_max_res=8, mapping_layers=4,
            attention_dropout=0.0)
MODES = ("simplex", "duplex", "duplex_kmeans")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    return create("ganformer", **{**TINY, **overrides})


# ------------------------------------------------------------------------------------------ sizes

@pytest.mark.parametrize("mode, g_params", [
    ("duplex_kmeans", 30_903_632),  # = the official pytorch_version Generator, --ganformer-default, ffhq
    ("simplex", 30_729_552),        # = the same with --kmeans off
    ("duplex", 30_739_792),         # simplex + a LayerNorm on the latent keys of each of the 11 attention layers
])
def test_ffhq_default_parameter_counts(mode, g_params):
    with torch.device("meta"):
        pair = create("ganformer", attention=mode)
    assert count_params(pair.generator) == g_params
    assert count_params(pair.discriminator) == 28_864_129  # StyleGAN2 residual D, 256 px, multiplier 2
    G = pair.generator
    assert (G.z_dim, G.n_latent, G.normalization) == (17 * 32, 15, "symmetric")
    assert len(G.attention_layers()) == 11                 # 4x4 stem + two per block at 8..128; none at 256
    assert {m.resolution for m in G.attention_layers()} == {4, 8, 16, 32, 64, 128}


@pytest.mark.parametrize("overrides, message", [
    (dict(latent_dim=10), "model.latent_dim"),
    (dict(heads=3), "model.heads"),
    (dict(attention="triplex"), "model.attention"),
    (dict(resolution=48), "model.resolution"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**overrides)


# ------------------------------------------------------------------------------------------ training step

def perturb_zero_inits(module: torch.nn.Module) -> None:
    """Noise strengths start at 0; give them a value so every path is exercised like mid-training."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)


@pytest.mark.parametrize("mode", MODES)
def test_one_training_step_reaches_every_parameter(mode):
    pair = tiny(attention=mode, attention_dropout=0.12, kmeans_iters=1)
    G, D = pair.generator.train(), pair.discriminator.train()
    assert isinstance(G, GANformerGenerator)
    perturb_zero_inits(G)
    z, real = torch.randn(4, G.z_dim), torch.rand(4, 3, 16, 16) * 2 - 1

    g_loss = F.softplus(-D(G(z))).mean()
    g_loss.backward()
    assert torch.isfinite(g_loss)
    # duplex_kmeans is the official code's default: its logits compare image queries with learned centroids,
    # so the latents' key projections (and the latent positions on them) never reach the loss (gansformer #45).
    unused = {"attention.to_keys.weight", "attention.to_keys.bias", "attention.to_pos_map.weight",
              "attention.to_pos_map.bias"} if mode == "duplex_kmeans" else set()
    for name, p in G.named_parameters():
        synthesis_attention = name.startswith("blocks.") and ".attention." in name
        if synthesis_attention and any(name.endswith(u) for u in unused):
            assert p.grad is None, name
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name

    D.zero_grad()
    d_loss = F.softplus(D(G(z).detach())).mean() + F.softplus(-D(real)).mean()
    d_loss.backward()
    assert torch.isfinite(d_loss)
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------ attention

def attention_layer(mode: str, **kw) -> ImageLatentAttention:
    layer = ImageLatentAttention(16, 8, num_latents=4, resolution=8, mode=mode, dropout=0.0, **kw).eval()
    with torch.no_grad():  # the stored modulation is N(0, 1)/sqrt(16): strong enough to see every latent
        layer.modulation.bias.normal_()
    return layer


@pytest.mark.parametrize("mode", MODES)
def test_every_image_position_depends_on_every_latent(mode):
    layer = attention_layer(mode)
    x, latents, pos = torch.randn(2, 16, 8, 8), torch.randn(2, 4, 8), torch.rand(4, 8)
    with torch.no_grad():
        base = layer(x, latents, pos)
        for j in range(4):
            moved = latents.clone()
            moved[:, j] += 1.0
            change = (layer(x, moved, pos) - base).abs().amax(dim=1)          # [B, H, W]
            assert (change > 1e-6).all(), f"latent {j} does not reach every position ({mode})"


@pytest.mark.parametrize("mode, global_keys", [("simplex", False), ("duplex_kmeans", False), ("duplex", True)])
def test_duplex_updates_latent_keys_from_the_image(mode, global_keys):
    """Paper: simplex sends information latents -> image only, so the assignment of a position depends on
    that position alone; duplex first moves each latent's key to its image region (K = a(Y, X)), so editing
    the image in one corner changes the assignment everywhere. The official default (learned centroids,
    one iteration) behaves like simplex here; a second k-means iteration brings the image back in."""
    layer = attention_layer(mode)
    x, latents, pos = torch.randn(2, 16, 8, 8), torch.randn(2, 4, 8), torch.rand(4, 8)
    layer.capture = True
    with torch.no_grad():
        layer(x, latents, pos)
        before = layer.captured["attn"]
        edited = x.clone()
        edited[:, :, 0, 0] += 3.0
        layer(edited, latents, pos)
        after = layer.captured["attn"]
    elsewhere = (after - before).abs()[:, :, 1:, :].amax()  # every row but the edited one
    assert (elsewhere > 1e-5) == global_keys, f"{mode}: max change away from the edit {elsewhere:.2e}"
    assert (after - before).abs()[:, :, 0, 0].amax() > 1e-5  # the edited position itself always changes


def test_duplex_keys_are_centroids_of_the_image_queries():
    layer = attention_layer("duplex")
    x, latents, pos = torch.randn(1, 16, 8, 8), torch.randn(1, 4, 8), torch.rand(4, 8)
    with torch.no_grad():
        tokens = x.flatten(2).transpose(1, 2)
        q = layer.to_queries(tokens) + layer.from_pos_map(layer.grid_pos)
        keys = layer.to_keys(latents) + layer.to_pos_map(pos)
        assign = torch.softmax(keys @ q.transpose(1, 2) / 4.0, dim=-1)          # size_head 16 -> scale 1/4
        expected = F.layer_norm(keys + assign @ q, (16,), layer.key_norm.weight, layer.key_norm.bias)
        got = layer.image_updated_keys(keys, q.unsqueeze(1), 0.25)
    torch.testing.assert_close(got.squeeze(1), expected)


def test_kmeans_iterations_bring_the_image_into_the_assignment():
    layer = attention_layer("duplex_kmeans", kmeans_iters=2)
    x, latents, pos = torch.randn(2, 16, 8, 8), torch.randn(2, 4, 8), torch.rand(4, 8)
    layer.capture = True
    with torch.no_grad():
        layer(x, latents, pos)
        before = layer.captured["attn"]
        edited = x.clone()
        edited[:, :, 0, 0] += 3.0
        layer(edited, latents, pos)
    assert (layer.captured["attn"] - before).abs()[:, :, 1:, :].amax() > 1e-5


def test_simplex_matches_the_paper_equations():
    """a(X, Y) = softmax(q(X) k(Y)^T / sqrt(d)) v(Y); u(X, Y) = X / rms(X) * (1 + gamma(a)) (code default 'mul')."""
    layer = attention_layer("simplex")
    x, latents, pos = torch.randn(2, 16, 8, 8), torch.randn(2, 4, 8), torch.rand(4, 8)
    with torch.no_grad():
        X = x.flatten(2).transpose(1, 2)
        q = layer.to_queries(X) + layer.from_pos_map(sinusoidal_grid(8, 8))
        k = layer.to_keys(latents) + layer.to_pos_map(pos)
        a = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1) @ layer.to_values(latents)
        u = X / X.square().mean(-1, keepdim=True).add(1e-8).sqrt() * (1 + layer.modulation(a))
        expected = u.transpose(1, 2).reshape(2, 16, 8, 8)
        torch.testing.assert_close(layer(x, latents, pos), expected, atol=1e-5, rtol=1e-5)


def test_sinusoidal_grid_layout():
    grid = sinusoidal_grid(4, 8).view(4, 4, 8)                   # [row, col, dim]
    x_part, y_part = grid[..., :4], grid[..., 4:]
    assert torch.equal(x_part, x_part[:1].expand_as(x_part))   # x blocks vary along columns only
    assert torch.equal(y_part, y_part[:, :1].expand_as(y_part))
    torch.testing.assert_close(grid[0, 0, :2], torch.sin(torch.tensor([-1.0, -1.0 / 100])))  # freqs 10000^(-4i/8)


def test_generator_image_depends_on_every_local_latent_and_the_global_one():
    G = tiny().generator.eval()
    G.noise_mode = "const"
    with torch.no_grad():
        w = G.mapping(torch.randn(2, G.z_dim))
        base = G.synthesis(w)
        ws = w.view(2, G.n_latent, G.k, G.d)
        for j in range(G.k):                    # components 0..3 local (attention), 4 global (modulation)
            moved = ws.clone()
            moved[:, :, j] += 1.0
            assert not torch.allclose(G.synthesis(moved.view_as(w)), base, atol=1e-5), j


def test_mapping_latents_talk_to_each_other():
    """ltnt2ltnt: with mapping attention each mapped local latent depends on the other local latents; the
    plain per-latent MLP (weights shared across components) keeps them independent."""
    for attention in (True, False):
        G = tiny(mapping_attention=attention).generator.eval()
        mlp, pos = G.mapping_network.local_mlp, G.latent_pos
        y = torch.randn(2, 4, 8)
        moved = y.clone()
        moved[:, 0] += 1.0
        with torch.no_grad():
            change = (mlp(moved, pos) - mlp(y, pos)).abs().amax(dim=(0, 2))     # per component
        assert change[0] > 1e-6
        assert bool((change[1:] > 1e-6).all()) == attention
        assert not any(hasattr(m, "capture") for m in G.modules() if isinstance(m, LatentSelfAttention))


# ------------------------------------------------------------------------------------------ contract

def test_contract_truncation_and_style_mixing():
    G = tiny().generator.eval()
    G.noise_mode = "const"
    assert (G.z_dim, G.w_dim, G.n_latent, G.resolution) == (40, 40, 7, 16)  # 1 + 2 + 2 + conv_last + ToRGB
    z1, z2 = torch.randn(3, 40), torch.randn(3, 40)
    with torch.no_grad():
        w1, w2 = G.mapping(z1), G.mapping(z2)
        img1, img2 = G.synthesis(w1), G.synthesis(w2)
        assert img1.shape == (3, 3, 16, 16)
        torch.testing.assert_close(G(z1, psi=1.0), img1)
        w_avg = compute_w_avg(G, num=256)
        centre = G(z1, psi=0.0, w_avg=w_avg)
        torch.testing.assert_close(centre, centre[:1].expand_as(centre))
        torch.testing.assert_close(G(z1, psi=0.7, w_avg=w_avg), G.synthesis(torch.lerp(w_avg, w1, 0.7)))
        for row in range(G.n_latent):          # every row (layer) is read, for all components together
            w = w1.clone()
            w[:, row] = w2[:, row]
            assert not torch.allclose(G.synthesis(w), img1, atol=1e-6), row
        torch.testing.assert_close(G.synthesis(torch.cat([w1[:, :0], w2], dim=1)), img2)
    with pytest.raises(ValueError, match="w must be"):
        G.synthesis(w1[:, :3])


def test_capture_contract():
    G = tiny(heads=2).generator.eval()
    layers = G.attention_layers()
    assert [m.resolution for m in layers] == [4, 8, 8]
    with torch.no_grad():
        G(torch.randn(2, G.z_dim))
    assert all(m.capture is False and m.captured is None for m in layers)
    for m in layers:
        m.capture = True
    with torch.no_grad():
        G(torch.randn(2, G.z_dim))
    for m in layers:
        attn, labels = m.captured["attn"], m.captured["labels"]
        assert attn.shape == (2, 2, m.resolution, m.resolution, 4)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, m.resolution, m.resolution))
        assert len(labels) == 2 and all(isinstance(s, str) for s in labels)


def test_recipe_loads_the_official_ffhq_setting():
    r = recipe.load("recipes/ganformer_ffhq256.toml")
    assert r.model_name == "ganformer" and r.model.attention == "duplex_kmeans" and r.model.components == 16
    t = r.train
    assert (t.batch, t.g_lr, t.d_lr, t.ttur, t.beta1, t.beta2) == (32, 0.002, 0.002, False, 0.0, 0.99)
    assert (t.r1, t.r1_every, t.style_mixing, t.pl_weight, t.bcr) == (10.0, 16, 0.9, 0.0, False)
    assert r.data.flip and math.isclose(t.ema_beta, 0.5 ** (32 / 10_000))
    with torch.device("meta"):
        assert count_params(create("ganformer", r.model).generator) == 30_903_632
