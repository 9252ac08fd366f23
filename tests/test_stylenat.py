"""StyleNAT: Hydra partitioning, config checks, official sizes, the generator contract, the 4x4 MHSA,
the split-head layout, capture, activation checkpointing and NA backends."""

from pathlib import Path

import pytest
import torch

from natgan import ops, recipe
from natgan.errors import ConfigError
from natgan.models import count_params, create, get_spec
from natgan.models.stylenat import (HydraNeighborhoodAttention, MultiHeadSelfAttentionRPB, Partition,
                                    hydra_partitions, set_na_backend)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = dict(resolution=32, style_dim=32, n_mlp=2, channels=[32, 32, 32, 32], min_heads=4,
            d_channels=[16, 16, 16, 16], kernels=[[3], [5], [3], [3, 5, 3]], dilations=[[1], [1], [1, 2], [1, 3, 6]])


# ------------------------------------------------------------------ independent brute-force reference

def _axis_neighbours(length, kernel, dilation):
    """Old-NATTEN windows along one axis: shifted (never truncated) inside each dilation group."""
    rows = []
    for i in range(length):
        group, index = i % dilation, i // dilation
        n = -(-(length - group) // dilation)
        start = min(max(index - kernel // 2, 0), n - kernel)
        rows.append([(start + t) * dilation + group for t in range(kernel)])
    return rows


def reference_na(q, k, v, kernel, dilation, rpb):
    """Loop-based NA with RPB on [B, H, W, heads, D] (q already scaled): one query at a time."""
    b, h, w, heads, _ = q.shape
    out = torch.zeros_like(q)
    rows, cols = _axis_neighbours(h, kernel, dilation), _axis_neighbours(w, kernel, dilation)
    for i in range(h):
        for j in range(w):
            keys = [(r, c) for r in rows[i] for c in cols[j]]
            kk = torch.stack([k[:, r, c] for r, c in keys], dim=2)            # [B, heads, K*K, D]
            vv = torch.stack([v[:, r, c] for r, c in keys], dim=2)
            bias = torch.stack([rpb[:, (r - i) // dilation + kernel - 1, (c - j) // dilation + kernel - 1]
                                for r, c in keys], dim=1)                    # [heads, K*K]
            logits = (q[:, i, j, :, None, :] * kk).sum(-1) + bias
            out[:, i, j] = (logits.softmax(-1)[..., None] * vv).sum(2)
    return out


# ------------------------------------------------------------------ Hydra partitions

def test_uneven_partitions_give_the_remainder_to_the_last():
    assert [p.heads for p in hydra_partitions(16, [7], [1, 2, 4])] == [5, 5, 6]
    assert [p.heads for p in hydra_partitions(8, [7], [1, 2, 3, 4, 5])] == [1, 1, 2, 2, 2]
    assert [p.heads for p in hydra_partitions(8, [7], [1, 2, 3, 4, 5, 6])] == [1, 1, 1, 1, 2, 2]
    assert hydra_partitions(16, [3, 5], [2]) == [Partition(3, 2, 8), Partition(5, 2, 8)]


def test_zero_head_partition_is_a_config_error():
    with pytest.raises(ConfigError, match="5 partitions need at least 5 heads"):
        hydra_partitions(4, [7], [1, 2, 3, 4, 5])
    bad = [[1], [1], [1, 2], [1, 2, 3, 4, 5]]          # 32x32 level has 4 heads
    with pytest.raises(ConfigError, match="level 32x32.*5 partitions need at least 5 heads"):
        create("stylenat", resolution=32, channels=[64] * 4, kernel_size=3, dilations=bad)


@pytest.mark.parametrize("overrides, message", [
    (dict(kernel_size=6), "kernels must be odd, got 6"),
    (dict(kernel_size=7, dilations=[[1], [1], [1, 4], [1, 4]]), "level 16x16: kernel 7 x dilation 4 = 28 exceeds"),
    (dict(dilations=[[1], [1]]), "expected 4 entries"),
    (dict(dilations=[[1]] * 4, dilation_pattern="progressive"), "not both"),
    (dict(kernels=[[3], [3, 5], [3], [3]], dilations=[[1], [1, 2, 3], [1], [1]]), "2 kernels and 3 dilations"),
    (dict(channels=[64, 64, 64, 50]), "not divisible by its 4 heads"),
])
def test_bad_configs_name_the_problem(overrides, message):
    base = dict(resolution=32, channels=[64] * 4, kernel_size=3)
    with pytest.raises(ConfigError, match=message):
        create("stylenat", **{**base, **overrides})


def test_dilation_patterns():
    official = create("stylenat", resolution=32, channels=[32] * 4, min_heads=2, kernel_size=3).config
    assert [official.level_dilations(i) for i in range(1, 4)] == [[1], [1, 2], [1, 4]]
    cfg = recipe.load(RECIPES / "ffhq256.toml").model
    two = dict(cfg.__dict__, dilations=None, dilation_pattern="two_partition")
    from natgan.models.stylenat import StyleNATConfig
    assert [StyleNATConfig(**two).level_dilations(i) for i in range(7)] == cfg.dilations
    prog = StyleNATConfig(**dict(two, dilation_pattern="progressive"))
    assert prog.level_dilations(6) == [1, 2, 4, 8, 16, 32] and prog.level_dilations(2) == [1, 2]


# ------------------------------------------------------------------ official sizes

@pytest.mark.parametrize("name, g_millions", [("ffhq256", 48.92), ("ffhq1024", 49.45), ("church8part", 48.92)])
def test_recipes_build_the_official_models(name, g_millions):
    """Paper/README sizes: 48.92 M (FFHQ-256), 49.45 M (FFHQ-1024); wavelet D 26.21 M at 256 with cm 2."""
    r = recipe.load(RECIPES / f"{name}.toml")
    pair = create(r.model_name, r.model)
    assert abs(count_params(pair.generator) / 1e6 - g_millions) < 0.01
    if name == "ffhq256":
        assert abs(count_params(pair.discriminator) / 1e6 - 26.21) < 0.01
        default = get_spec("stylenat").make_config()          # the registry default is this official model
        assert default.level_channels() == r.model.level_channels()
        assert [default.level_dilations(i) for i in range(7)] == r.model.dilations
    if name == "church8part":
        top = pair.generator.layers[-1].blocks[0].attn
        assert [p.heads for p in top.partitions] == [1] * 8


# ------------------------------------------------------------------ generator behaviour

def test_generator_contract_and_truncation():
    pair = create("stylenat", **TINY)
    G, D = pair.generator.eval(), pair.discriminator
    assert (G.z_dim, G.resolution, G.normalization, G.n_latent) == (32, 32, "imagenet", 8)
    z = torch.randn(3, 32)
    with torch.no_grad():
        w = G.mapping(z)
        assert w.shape == (3, 8, 32) and torch.equal(w[:, 0], w[:, 7])
        img = G.synthesis(w)
        assert img.shape == (3, 3, 32, 32) and torch.isfinite(img).all()
        assert torch.allclose(G(z), img, atol=1e-6)
        w_avg = G.mapping(torch.randn(64, 32)).mean(0)
        collapsed = G(z, psi=0.0, w_avg=w_avg)
        assert torch.allclose(collapsed[0], collapsed[2], atol=1e-5)
        assert not torch.allclose(img[0], img[2], atol=1e-3)
        mixed = w.clone()
        mixed[:, 4:] = G.mapping(torch.randn(3, 32))[:, 4:]      # style mixing swaps rows of dim 1
        assert not torch.allclose(G.synthesis(mixed), img, atol=1e-4)
    assert D(img).shape == (3, 1)


def test_official_state_dict_names_and_parameter_order():
    G = create("stylenat", **TINY).generator
    keys = list(G.state_dict())
    for key in ("style.1.weight", "input.input", "layers.0.blocks.0.attn.rpb",
                "layers.0.blocks.0.attn.relative_position_index", "layers.3.blocks.1.attn.rpb.2",
                "layers.0.upsample.alpha", "layers.0.upsample.reduction.weight", "to_rgbs.0.upsample.kernel",
                "to_rgbs.3.bias", "layers.2.blocks.0.norm2.style.weight", "layers.2.blocks.0.mlp.fc2.bias"):
        assert key in keys, key
    names = [n for n, _ in G.named_parameters()]
    block = [n.split("attn.")[1] for n in names if n.startswith("layers.3.blocks.0.attn.")]
    assert block == ["qkv.weight", "qkv.bias", "rpb.0", "rpb.1", "rpb.2", "proj.weight", "proj.bias"]
    assert names.index("layers.0.upsample.alpha") < names.index("layers.0.upsample.norm.weight")


def test_hydra_attention_matches_brute_force_reference():
    torch.manual_seed(1)
    parts = hydra_partitions(4, [3, 5, 3], [1, 3, 6])
    attn = HydraNeighborhoodAttention(32, parts, qk_scale=None).double()
    with torch.no_grad():
        for t in attn.rpb:
            t.normal_(0, 0.5)
    x = torch.randn(1, 19, 21, 32, dtype=torch.double)     # non-square, dilations not dividing the sides
    out = attn(x)
    q, k, v = attn.qkv(x).view(1, 19, 21, 3, 4, 8).unbind(3)
    q = q * 8 ** -0.5
    pieces, start = [], 0
    for p, table in zip(parts, attn.rpb):
        sl = slice(start, start + p.heads)
        start += p.heads
        pieces.append(reference_na(q[..., sl, :], k[..., sl, :], v[..., sl, :], p.kernel, p.dilation, table))
    expected = attn.proj(torch.cat(pieces, dim=3).reshape(1, 19, 21, 32))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


def test_mhsa_4x4_uses_key_minus_query_bias():
    torch.manual_seed(2)
    m = MultiHeadSelfAttentionRPB(16, 2).double()
    with torch.no_grad():
        m.rpb.normal_(0, 1)
    x = torch.randn(1, 4, 4, 16, dtype=torch.double)
    q, k, v = m.qkv(x).view(1, 16, 3, 2, 8).permute(2, 0, 3, 1, 4)
    logits = (q * 8 ** -0.5) @ k.transpose(-2, -1)
    for qi in range(16):
        for ki in range(16):
            dr, dc = ki // 4 - qi // 4, ki % 4 - qi % 4
            logits[0, :, qi, ki] += m.rpb[:, dr + 3, dc + 3]
    expected = m.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(1, 4, 4, 16))
    torch.testing.assert_close(m(x), expected, atol=1e-12, rtol=0)


def test_split_head_layout_equals_hydra_with_the_same_weights():
    legacy = dict(TINY, kernels=[[3], [5], [3], [3, 5]], dilations=[[1], [1], [1, 2], [1, 3]])
    split = create("stylenat", **legacy, head_layout="split").generator.eval()
    hydra_cfg = dict(legacy, kernels=[[3], [5], [3, 3], [3, 5]], dilations=[[1], [1], [1, 2], [1, 3]])
    hydra = create("stylenat", **hydra_cfg).generator.eval()
    state = {}
    for key, value in split.state_dict().items():
        if key.endswith("attn.rpb0") and key.startswith("layers.1."):
            state[key[:-4] + "rpb.0"] = torch.cat([value, split.state_dict()[key[:-1] + "1"]])
        elif key.endswith("attn.rpb1") and key.startswith("layers.1."):
            continue
        else:
            state[key.replace("attn.rpb0", "attn.rpb.0").replace("attn.rpb1", "attn.rpb.1")] = value
    hydra.load_state_dict(state)
    assert "layers.1.blocks.0.attn.rpb0" in split.state_dict()
    z = torch.randn(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(split(z), hydra(z), atol=1e-6, rtol=0)


def test_capture_contract():
    G = create("stylenat", **TINY).generator.eval()
    attn = [m for m in G.modules() if hasattr(m, "capture")]
    assert len(attn) == 8 and not any(m.capture for m in attn)
    for m in attn:
        m.capture = True
    with torch.no_grad():
        G(torch.randn(2, 32))
    top = G.layers[3].blocks[0].attn
    cap = top.captured
    assert cap["q"].shape == cap["k"].shape == (2, 4, 32, 32, 8)
    assert cap["labels"] == ["k3 d1", "k5 d3", "k3 d6", "k3 d6"]
    assert G.layers[0].blocks[0].attn.captured["q"].shape == (2, 4, 4, 4, 8)


def test_256_generator_forward_backward_reduced_width():
    """The whole 256x256 StyleNAT (k7, dilations up to 32) through the torch NA backend, reduced width."""
    cfg = dict(resolution=256, style_dim=32, n_mlp=2, channels=[32, 32, 32, 32, 16, 16, 16], min_heads=2,
               d_channels=[16] * 7)
    pair = create("stylenat", **cfg)
    G = pair.generator
    set_na_backend(G, "torch")
    img = G(torch.randn(1, 32))
    assert img.shape == (1, 3, 256, 256)
    img.square().mean().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert G.layers[6].blocks[1].attn.rpb[1].grad.abs().sum() > 0
    assert G.layers[5].upsample.alpha.grad.abs() > 0


@pytest.mark.slow
def test_256_generator_forward_backward_full_width():
    G = create("stylenat").generator
    set_na_backend(G, "torch")
    G.activation_checkpointing = True
    img = G(torch.randn(1, 512))
    img.mean().backward()
    assert torch.isfinite(G.layers[6].blocks[1].attn.rpb[1].grad).all()


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(3)
    G = create("stylenat", **TINY).generator
    z = torch.randn(2, 32)
    G(z).square().mean().backward()
    plain = {n: p.grad.clone() for n, p in G.named_parameters()}
    G.zero_grad()
    G.activation_checkpointing = True
    assert G.activation_checkpointing
    G(z).square().mean().backward()
    for n, p in G.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], atol=1e-6, rtol=1e-5)


def reference_na_gather(q, k, v, kernel, dilation=1, rpb=None, scale=None, backend=None):
    """Vectorised brute force (index tables + gather) with the same signature as natgan.ops."""
    b, h, w, heads, d = q.shape
    rows = torch.tensor(_axis_neighbours(h, kernel, dilation))            # [H, K]
    cols = torch.tensor(_axis_neighbours(w, kernel, dilation))            # [W, K]
    gather = (slice(None), rows[:, None, :, None], cols[None, :, None, :])
    kk, vv = k[gather].flatten(3, 4), v[gather].flatten(3, 4)             # [B, H, W, K*K, heads, D]
    logits = torch.einsum("bijhd,bijnhd->bijhn", q * (d ** -0.5 if scale is None else scale), kk)
    if rpb is not None:
        dr = (rows - torch.arange(h)[:, None]) // dilation + kernel - 1
        dc = (cols - torch.arange(w)[:, None]) // dilation + kernel - 1
        bias = rpb[:, dr[:, None, :, None], dc[None, :, None, :]]         # [heads, H, W, K, K]
        logits = logits + bias.flatten(3).permute(1, 2, 0, 3)
    return torch.einsum("bijhn,bijnhd->bijhd", logits.softmax(-1), vv)


def test_generator_with_the_torch_backend_matches_a_brute_force_generator(monkeypatch):
    torch.manual_seed(4)
    G = create("stylenat", **TINY).generator.eval()
    z = torch.randn(2, 32)
    with torch.no_grad():
        set_na_backend(G, "torch")
        fast = G(z)
        monkeypatch.setattr(ops, "neighborhood_attention", reference_na_gather)
        slow = G(z)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def _rpb_backends():
    """Backends importable here that support RPB (natten >= 0.20 has none, so it cannot run StyleNAT)."""
    return [b for b in ops.available_backends() if b != "natten"]


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.slow),      # eager flex on CPU: dense scores, seconds per call
    pytest.param("cuda", marks=pytest.mark.gpu),
])
def test_same_weights_same_images_on_every_available_backend(device):
    torch.manual_seed(4)
    G = create("stylenat", **TINY).generator.eval().to(device)
    z = torch.randn(2, 32).to(device)
    backends = _rpb_backends()
    assert "torch" in backends
    with torch.no_grad():
        set_na_backend(G, "torch")
        reference = G(z)
        for backend in backends + [None]:
            set_na_backend(G, backend)
            torch.testing.assert_close(G(z), reference, atol=2e-5 if device == "cpu" else 1e-4, rtol=0,
                                       msg=f"backend {backend}")
