"""`nat-gan visualize` / natgan.viz: maps against a direct computation, selections, files, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from natgan.cli import app
from natgan.errors import ConfigError, NatGanError
from natgan.viz import attention_maps, mean_query_map, render
from natgan.viz.capture import attention_modules
from natgan.viz.colormaps import COLORMAPS, apply, lookup_table
from natgan.viz.render import grid_columns, normalise

# ----------------------------------------------------------------------------------- tiny test-only model


class TinySelfAttention(nn.Module):
    """Global attention over [B, H, W, C] honouring the capture contract (q scaled, spatial layout)."""

    def __init__(self, dim: int, heads: int, labels: list[str]):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head_labels = labels
        self.capture = False
        self.captured = None

    def project(self, x):
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).view(b, h, w, 3, self.heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        return q * self.scale, k, v  # [B, heads, H, W, hd]

    def forward(self, x):
        b, h, w, c = x.shape
        q, k, v = self.project(x)
        if self.capture:
            self.captured = {"q": q, "k": k, "labels": self.head_labels}
        attn = (q.flatten(2, 3) @ k.flatten(2, 3).transpose(-1, -2)).softmax(-1)
        out = (attn @ v.flatten(2, 3)).view(b, self.heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, c)
        return self.proj(out)


class TinyCrossAttention(nn.Module):
    """Image -> latent attention storing probabilities [B, heads, H, W, n_latents]."""

    def __init__(self, dim: int, heads: int, n_latents: int):
        super().__init__()
        self.heads, self.n_latents = heads, n_latents
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.latents = nn.Parameter(torch.randn(n_latents, dim))
        self.capture = False
        self.captured = None

    def forward(self, x):
        b, h, w, c = x.shape
        q = self.q(x).view(b, h * w, self.heads, -1).transpose(1, 2)
        k = self.k(self.latents).view(self.n_latents, self.heads, -1).transpose(0, 1)
        probs = (q @ k.transpose(-1, -2) * 3.0).softmax(-1)          # [B, heads, HW, L]
        if self.capture:
            self.captured = {"attn": probs.view(b, self.heads, h, w, self.n_latents),
                             "labels": ["latent"] * self.heads}
        return x * (1 + probs.mean(1).mean(-1, keepdim=True).view(b, h, w, 1))


class TinyGenerator(nn.Module):
    """4 -> 8 -> 16 -> 32, two self-attention blocks per level, one cross-attention at 16."""

    z_dim = 8
    resolution = 32
    normalization = "symmetric"
    n_latent = None

    def __init__(self, dim: int = 16):
        super().__init__()
        self.dim = dim
        self.mapping = nn.Linear(self.z_dim, dim)
        self.const = nn.Parameter(torch.randn(1, 4, 4, dim))
        self.levels = nn.ModuleList()
        for res in (4, 8, 16, 32):
            blocks = [TinySelfAttention(dim, 4, ["k3 d1", "k3 d1", f"k3 d{res // 8 or 1}", f"k3 d{res // 8 or 1}"]),
                      TinySelfAttention(dim, 4, ["window"] * 2 + ["shifted window"] * 2)]
            if res == 16:
                blocks.insert(1, TinyCrossAttention(dim, 2, 5))
            self.levels.append(nn.ModuleList(blocks))
        self.to_rgb = nn.Linear(dim, 3)

    def synthesis(self, w):
        x = self.const.expand(w.shape[0], -1, -1, -1) + w[:, None, None, :]
        for i, blocks in enumerate(self.levels):
            if i:
                x = nn.functional.interpolate(x.permute(0, 3, 1, 2), scale_factor=2).permute(0, 2, 3, 1)
            for block in blocks:
                x = x + block(x)
        return torch.tanh(self.to_rgb(x)).permute(0, 3, 1, 2)

    def mapping_fn(self, z):
        return self.mapping(z)

    def forward(self, z, psi=1.0, w_avg=None):
        return self.synthesis(self.mapping(z))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyGenerator().eval()


def _inputs_of(G: nn.Module, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input x of every self-attention call, recorded independently of the capture machinery."""
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=name: seen.__setitem__(n, args[0].clone()))
               for name, m in G.named_modules() if isinstance(m, TinySelfAttention)]
    with torch.no_grad():
        G(z)
    for h in handles:
        h.remove()
    return seen


# ----------------------------------------------------------------------------------------------- maps


def test_maps_match_direct_computation(tiny):
    z = torch.randn(1, tiny.z_dim)
    result = attention_maps(tiny, z, levels="all")
    inputs = _inputs_of(tiny, z)
    self_blocks = [b for b in result.blocks if b.kind == "self"]
    assert len(self_blocks) == 8
    for b in self_blocks:
        module = dict(tiny.named_modules())[b.name]
        x = inputs[b.name][0]                                       # [H, W, C]
        qkv = x @ module.qkv.weight.T + module.qkv.bias             # independent of module.project
        q, k = qkv[..., :tiny.dim], qkv[..., tiny.dim: 2 * tiny.dim]
        for h in range(module.heads):
            sl = slice(h * module.head_dim, (h + 1) * module.head_dim)
            q_mean = (q[..., sl] * module.scale).reshape(-1, module.head_dim).mean(0)
            expected = (k[..., sl] @ q_mean) / 2                      # [H, W]
            torch.testing.assert_close(b.maps[h], expected, rtol=1e-5, atol=1e-6)


def test_mean_query_map_formula():
    q = torch.randn(2, 3, 4, 5, 6)
    k = torch.randn(2, 3, 4, 5, 6)
    out = mean_query_map(q, k)
    assert out.shape == (2, 3, 4, 5)
    expected = torch.einsum("bhd,bhyxd->bhyx", q.mean(dim=(2, 3)), k) / 2
    torch.testing.assert_close(out, expected)
    # explicit loop for one entry
    assert torch.isclose(out[1, 2, 3, 4], (q[1, 2].reshape(-1, 6).mean(0) * k[1, 2, 3, 4]).sum() / 2)


def test_levels_blocks_and_order(tiny):
    result = attention_maps(tiny, 3)
    assert result.levels == [16, 32]                                  # default: from 16x16 up
    at16 = result.at(16)
    assert [(b.block, b.kind) for b in at16] == [(0, "self"), (1, "cross"), (2, "self")]
    assert at16[0].labels == ["k3 d1", "k3 d1", "k3 d2", "k3 d2"]
    assert at16[1].maps.shape == (2, 16, 16, 5)
    torch.testing.assert_close(at16[1].maps.sum(-1), torch.ones(2, 16, 16))
    assert result.image.shape == (3, 32, 32) and result.image.dtype == torch.uint8
    every = attention_maps(tiny, 3, levels="all")
    assert every.levels == [4, 8, 16, 32]


def test_selection_of_levels_blocks_heads(tiny):
    result = attention_maps(tiny, 42, levels=[32], blocks=[1], heads=[0, 3])
    assert len(result.blocks) == 1
    b = result.blocks[0]
    assert (b.level, b.block, b.heads, b.labels) == (32, 1, [0, 3], ["window", "shifted window"])
    full = attention_maps(tiny, 42, levels=[32], blocks=[1])
    torch.testing.assert_close(b.maps, full.blocks[0].maps[[0, 3]])


def test_seed_is_reproducible_and_uses_cpu_rng(tiny):
    a = attention_maps(tiny, 7)
    b = attention_maps(tiny, 7)
    assert torch.equal(a.image, b.image)
    torch.manual_seed(7)
    assert torch.equal(a.z, torch.randn(1, tiny.z_dim))               # same z as the official script
    state = torch.get_rng_state()
    attention_maps(tiny, 8)
    assert torch.equal(state, torch.get_rng_state())                  # global RNG untouched


def test_capture_flags_restored_and_memory_freed(tiny):
    attention_maps(tiny, 1)
    for _, m in attention_modules(tiny):
        assert m.capture is False and m.captured is None


@pytest.mark.parametrize("kwargs, match", [
    ({"levels": [64]}, "level 64 has no attention"),
    ({"blocks": [5]}, "block 5 does not exist"),
    ({"heads": [9]}, "head 9 does not exist"),
    ({"levels": "some"}, "expected resolutions or 'all'"),
])
def test_bad_selection_is_a_clear_error(tiny, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        attention_maps(tiny, 1, **kwargs)


def test_model_without_attention_is_an_error():
    class Conv(nn.Module):
        z_dim, resolution, normalization = 4, 8, "symmetric"

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3 * 64)

        def forward(self, z):
            return self.lin(z).view(-1, 3, 8, 8)

    with pytest.raises(NatGanError, match="no attention modules"):
        attention_maps(Conv(), 1)


def test_batch_latent_rejected(tiny):
    with pytest.raises(ConfigError, match="one image"):
        attention_maps(tiny, torch.randn(2, tiny.z_dim))


# --------------------------------------------------------------------------------------------- render


def test_render_writes_labelled_files(tiny, tmp_path):
    result = attention_maps(tiny, 42, model="tiny")
    files = render(result, tmp_path / "maps", cmap="viridis")
    names = sorted(f.name for f in files)
    assert names == sorted(["sample.png", "16x16_block0.png", "16x16_block1.png", "16x16_block2.png",
                            "32x32_block0.png", "32x32_block1.png", "16x16_overview.png", "32x32_overview.png"])
    for f in files:
        assert f.is_file()
    assert Image.open(tmp_path / "maps" / "sample.png").size == (32, 32)
    grid_img = Image.open(tmp_path / "maps" / "32x32_block0.png")
    assert grid_img.width >= 2 * 128 and grid_img.height >= 2 * 128     # 4 heads -> 2x2 tiles of >= 128 px
    over = Image.open(tmp_path / "maps" / "16x16_overview.png")
    assert over.height > 3 * 96                                         # three block rows
    assert not list((tmp_path / "maps").glob(".*tmp*"))                  # no temporary files left


def test_render_tiles_show_the_normalised_map(tiny, tmp_path):
    result = attention_maps(tiny, 42, levels=[32], blocks=[0], heads=[1])
    render(result, tmp_path, cmap="gray", norm="head", min_tile=32)
    img = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "32x32_block0.png")))
    expected = (normalise(result.blocks[0].maps, "head")[0] * 255).round().to(torch.uint8)
    gray = img[..., 0]
    windows = gray.unfold(0, 32, 1).unfold(1, 32, 1)                    # every 32x32 window of the sheet
    found = (windows == expected).flatten(-2).all(-1)
    assert found.any(), "the head's normalised map is not drawn in the grid"


def test_normalise_modes():
    maps = torch.tensor([[[-2.0, 0.0], [1.0, 2.0]], [[0.0, 0.5], [0.25, 0.0]]])
    head = normalise(maps, "head")
    assert head[0].min() == 0 and head[0].max() == 1 and head[1].max() == 1
    block = normalise(maps, "block")
    assert block.min() == 0 and block.max() == 1 and block[1].max() < 1
    official = normalise(maps, "official")
    assert official[0, 0, 0] == 0 and official[0, 1, 1] == 1 and official[1, 0, 1] == 0.5


def test_colormaps_and_grid_columns():
    for name in COLORMAPS:
        table = lookup_table(name)
        assert table.shape == (256, 3) and table.dtype == torch.uint8
    assert lookup_table("gray")[128].tolist() == [128, 128, 128]
    assert apply(torch.tensor([[0.0, 1.0]]), "viridis").tolist() == [[[68, 1, 84], [253, 231, 37]]]
    with pytest.raises(ConfigError, match="unknown colour map"):
        lookup_table("rainbow")
    assert [grid_columns(n) for n in (16, 8, 4, 2, 1, 5)] == [4, 3, 2, 2, 1, 3]


def test_render_cross_modes(tiny, tmp_path):
    result = attention_maps(tiny, 42, levels=[16], blocks=[1])
    for mode in ("soft", "hard", "latents"):
        files = render(result, tmp_path / mode, cross=mode)
        assert (tmp_path / mode / "16x16_block1.png") in files
    hard = Image.open(tmp_path / "hard" / "16x16_block1.png")
    latents = Image.open(tmp_path / "latents" / "16x16_block1.png")
    assert latents.height > hard.height                                 # 2 heads x 5 latents = 10 tiles
    with pytest.raises(ConfigError, match="--cross"):
        render(result, tmp_path / "x", cross="mixed")


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def tiny_registered(monkeypatch):
    """Register the tiny generator under a test-only name for the duration of one test."""
    from dataclasses import dataclass

    from natgan.config import option
    from natgan.models import registry

    @dataclass
    class TinyConfig:
        resolution: int = option(32, min=32, max=32)
        dim: int = option(16, min=4)

    registry._load_all()
    spec = registry.ModelSpec("tiny-attn", TinyConfig, lambda cfg: (TinyGenerator(cfg.dim), nn.Linear(1, 1)),
                              "test-only", {}, None)
    monkeypatch.setitem(registry._REGISTRY, "tiny-attn", spec)
    return spec


def test_cli_writes_files_and_json(tiny_registered, tmp_path):
    out = tmp_path / "attn"
    res = CliRunner().invoke(app, ["visualize", "--model", "tiny-attn", "--set", "model.dim=8", "--seed", "3",
                                   "--outdir", str(out), "--levels", "32", "--heads", "0,1", "--cmap", "magma",
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"] == "tiny-attn" and data["seed"] == 3
    assert sorted(p.split("/")[-1] for p in data["files"]) == ["32x32_block0.png", "32x32_block1.png",
                                                               "32x32_overview.png", "sample.png"]
    assert all((out / p.split("/")[-1]).is_file() for p in data["files"])
    assert data["blocks"][0]["heads"] == [0, 1] and data["blocks"][0]["labels"] == ["k3 d1", "k3 d1"]


@pytest.mark.parametrize("args, match", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "tiny-attn", "--cmap", "rainbow"], "unknown colour map"),
    (["--model", "tiny-attn", "--levels", "16,x"], "--levels"),
    (["--model", "tiny-attn", "--levels", "64"], "level 64 has no attention"),
    (["--model", "tiny-attn", "--set", "train.batch=2"], "only model"),
    ([], "give --ckpt"),
])
def test_cli_errors_are_one_line(tiny_registered, tmp_path, args, match):
    res = CliRunner().invoke(app, ["visualize", "--outdir", str(tmp_path / "o"), *args])
    assert res.exit_code != 0
    assert isinstance(res.exception, (NatGanError, SystemExit))
    if isinstance(res.exception, NatGanError):
        assert match in str(res.exception) and "\n" not in str(res.exception)
    assert not (tmp_path / "o").exists()                                # nothing written on failure


def test_cli_reads_checkpoints(tiny_registered, tmp_path):
    """--ckpt rebuilds the (EMA) generator through the registry and visualises those weights."""
    import dataclasses

    from natgan import checkpoint

    config = tiny_registered.make_config({"dim": 8})
    G = TinyGenerator(8)
    ema = TinyGenerator(8)
    ckpt = checkpoint.make_checkpoint(model_name="tiny-attn", model_config=dataclasses.asdict(config), recipe=None,
                                      normalization="symmetric", G=G.state_dict(), G_ema=ema.state_dict())
    path = checkpoint.save(ckpt, tmp_path / "g.pt")
    runner = CliRunner()
    for flag, source in (([], ema), (["--no-ema"], G)):
        out = tmp_path / ("raw" if flag else "ema")
        res = runner.invoke(app, ["visualize", "--ckpt", str(path), "--outdir", str(out), "--json", *flag])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["model"] == "tiny-attn"
        expected = attention_maps(source.eval(), 42).image.permute(1, 2, 0).numpy()
        assert (__import__("numpy").array(Image.open(out / "sample.png")) == expected).all()
    res = runner.invoke(app, ["visualize", "--ckpt", str(path), "--model", "tiny-attn"])
    assert res.exit_code != 0 and "--ckpt already names its model" in str(res.exception)


# ----------------------------------------------------------------------------------------- real models

REAL_TINY = {
    "stylenat": dict(resolution=32, style_dim=16, n_mlp=2, channels=[32, 32, 32, 32], min_heads=4, kernel_size=3,
                     dilations=[[1], [1], [1, 2], [1, 4]], d_channels=[16] * 4),
    "styleswin": dict(resolution=32, style_dim=16, n_mlp=2, channels=[32, 32, 32, 32], min_heads=4,
                      d_channels=[16] * 4),
}


def _scale_of(attn: nn.Module) -> float:
    return attn.scale if hasattr(attn, "scale") else attn.attn[0].scale     # Hydra NA | Swin double attention


@pytest.mark.parametrize("name", ["stylenat", "styleswin"])
def test_real_models_match_direct_computation(name):
    """q and k recomputed from each block's own qkv projection and input, heads contiguous in channels."""
    from natgan.models import create

    G = create(name, **REAL_TINY[name]).generator.eval()
    z = torch.randn(1, G.z_dim)
    inputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: inputs.__setitem__(n, args[0].clone()))
               for n, m in G.named_modules() if hasattr(m, "capture")]
    with torch.no_grad():
        G(z)
    for h in handles:
        h.remove()
    result = attention_maps(G, z, model=name)
    assert result.levels == [16, 32] and [b.block for b in result.at(32)] == [0, 1]
    modules = dict(G.named_modules())
    for b in result.blocks:
        attn = modules[b.name]
        x = inputs[b.name][0]                                               # [H, W, C]
        c = x.shape[-1]
        q, k = (x @ attn.qkv.weight.T + attn.qkv.bias).split(c, dim=-1)[:2]
        heads = len(b.heads)
        hd = c // heads
        q = q * _scale_of(attn)
        q_mean = q.reshape(-1, heads, hd).mean(0)                          # [heads, hd]
        expected = torch.einsum("hd,yxhd->hyx", q_mean, k.reshape(*k.shape[:2], heads, hd)) / 2
        torch.testing.assert_close(b.maps, expected, rtol=1e-4, atol=1e-5)
    labels16 = result.at(16)[0].labels
    if name == "stylenat":
        assert labels16 == ["k3 d1", "k3 d1", "k3 d2", "k3 d2"]
    else:
        assert labels16 == ["window", "window", "shifted window", "shifted window"]


@pytest.mark.parametrize("name, overrides", [
    ("hit-s", dict(resolution=32, low_res_stages=2, widths=[32, 32, 16], heads=[4, 2, 2], depths=[1, 1, 2],
                   block_sizes=[4, 4], z_dim=16, d_channel_multiplier=1, d_max_channels=16)),
    ("ganformer", dict(resolution=32, components=4, latent_dim=8, channel_max=16, mapping_layers=2)),
])
def test_cross_attention_models_give_assignment_maps(name, overrides, tmp_path):
    from natgan.models import create

    G = create(name, **overrides).generator.eval()
    result = attention_maps(G, 42, levels="all", model=name)
    cross = [b for b in result.blocks if b.kind == "cross"]
    assert cross, "expected image -> latent cross-attention blocks"
    for b in cross:
        torch.testing.assert_close(b.maps.sum(-1), torch.ones(b.maps.shape[:-1]), rtol=0, atol=1e-4)
    files = render(result, tmp_path, cross="hard")
    assert len(files) == 1 + len(result.blocks) + len(result.levels)


def test_cli_scale_enlarges_the_sheets(tiny_registered, tmp_path):
    runs = {}
    for scale in (1, 2):
        out = tmp_path / f"s{scale}"
        res = CliRunner().invoke(app, ["visualize", "--model", "tiny-attn", "--set", "model.dim=8", "--outdir",
                                       str(out), "--levels", "32", "--scale", str(scale)])
        assert res.exit_code == 0, res.output
        runs[scale] = {p.name: np.asarray(Image.open(p)) for p in out.glob("*.png")}
    assert runs[1].keys() == runs[2].keys() and runs[1]
    for name, small in runs[1].items():
        assert np.array_equal(runs[2][name], np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)), name
