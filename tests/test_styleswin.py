"""StyleSwin: official sizes, Swin conventions, the shifted half crossing window borders, capture and one
training step of G and D."""

from pathlib import Path

import torch
import torch.nn.functional as F

from natgan import recipe
from natgan.models import count_params, create
from natgan.models.styleswin import (SwinDoubleAttention, relative_index_query_minus_key, shifted_window_mask,
                                     shifted_window_masks)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = dict(resolution=32, style_dim=32, n_mlp=2, channels=[32, 32, 32, 32], min_heads=4, d_channels=[16] * 4)


def test_official_parameter_counts():
    r = recipe.load(RECIPES / "styleswin_ffhq256.toml")
    pair = create(r.model_name, r.model)
    assert abs(count_params(pair.generator) / 1e6 - 48.93) < 0.01      # paper Table 1
    assert abs(count_params(pair.discriminator) / 1e6 - 26.21) < 0.01
    assert create("styleswin").config == r.model                      # the registry default is the paper model


def test_1024_parameter_count():
    pair = create("styleswin-1024")                                     # paper Table 1: 40.86 M (G multiplier 1)
    assert abs(count_params(pair.generator) / 1e6 - 40.86) < 0.01
    assert abs(count_params(pair.discriminator) / 1e6 - 27.74) < 0.01


def test_windows_shifts_and_position_index():
    cfg = create("styleswin", **TINY).config
    assert [cfg.window_and_shift(r) for r in (4, 8, 16, 32)] == [(4, 0), (8, 0), (8, 4), (8, 4)]
    index = relative_index_query_minus_key(2)           # 2x2 window, 3x3 table, query - key + 1 per axis
    assert index[0].tolist() == [4, 3, 1, 0] and index[3].tolist() == [8, 7, 5, 4]


def _official_mask(resolution, window, shift):
    """The official construction, written out independently: label 9 regions of the map, compare labels."""
    labels = torch.zeros(resolution, resolution)
    edges = [0, resolution - window, resolution - shift, resolution]
    for i in range(3):
        for j in range(3):
            labels[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = 3 * i + j
    n = resolution // window
    wins = labels.view(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, -1)
    return torch.where(wins[:, :, None] == wins[:, None, :], 0.0, -100.0)


def test_compact_seam_masks_equal_the_official_mask():
    for res, window, shift in [(16, 8, 4), (32, 8, 4), (24, 6, 3)]:
        assert torch.equal(shifted_window_mask(res, window, shift), _official_mask(res, window, shift))
    assert shifted_window_masks(8, 4).shape == (3, 64, 64)


def test_shifted_half_crosses_window_borders():
    """A change in window (0,0) reaches window (0,1) only through the shifted-window heads."""
    torch.manual_seed(0)
    attn = SwinDoubleAttention(32, 4, resolution=16, window=8, shift=4).double().eval()
    x = torch.randn(1, 16, 16, 32, dtype=torch.double)
    moved = x.clone()
    moved[0, 5, 6] += 1.0                                   # inside window (0,0), near its right/bottom border
    with torch.no_grad():
        delta = (attn(moved) - attn(x)).abs().sum(-1)[0]
        assert delta[5, 9] > 1e-6                           # neighbouring window (0,1)
        assert delta[13, 13] == 0                           # far window (1,1): no path in one block
        attn.proj.weight[:, 16:] = 0                        # silence the shifted half
        delta = (attn(moved) - attn(x)).abs().sum(-1)[0]
        assert delta[5, 9] == 0 and delta[5, 2] > 1e-6      # plain windows stay inside window (0,0)


def test_capture_contract():
    G = create("styleswin", **TINY).generator.eval()
    modules = [m for m in G.modules() if hasattr(m, "capture")]
    assert len(modules) == 8
    for m in modules:
        m.capture = True
    with torch.no_grad():
        G(torch.randn(2, 32))
    cap = G.layers[2].blocks[0].attn.captured
    assert cap["q"].shape == cap["k"].shape == (2, 4, 16, 16, 8)
    assert cap["labels"] == ["window", "window", "shifted window", "shifted window"]
    assert G.layers[1].blocks[0].attn.captured["labels"] == ["window"] * 4


def test_training_step_smoke():
    """One D step (non-saturating loss + R1) and one G step: finite losses, gradients on every parameter."""
    torch.manual_seed(0)
    pair = create("styleswin", **TINY)
    G, D = pair.generator, pair.discriminator
    g_opt = torch.optim.Adam(G.parameters(), lr=5e-5, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.99))
    real = torch.randn(4, 3, 32, 32)

    d_opt.zero_grad()
    fake = G(torch.randn(4, 32)).detach()
    real.requires_grad_(True)
    real_pred = D(real)
    d_loss = F.softplus(D(fake)).mean() + F.softplus(-real_pred).mean()
    (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
    r1 = grad.square().flatten(1).sum(1).mean()
    (d_loss + 5.0 * r1).backward()
    assert torch.isfinite(d_loss) and torch.isfinite(r1)
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    d_opt.step()

    g_opt.zero_grad()
    g_loss = F.softplus(-D(G(torch.randn(4, 32)))).mean()
    g_loss.backward()
    assert torch.isfinite(g_loss)
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    g_opt.step()
