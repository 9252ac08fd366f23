"""`nat-gan sample` and natgan.sampling: seeds, reproducibility, truncation, exports, CLI."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from natgan import checkpoint as ckpt_io
from natgan.cli import main
from natgan.config import option
from natgan.errors import ConfigError
from natgan.models import registry
from natgan.models.normalization import to_uint8
from natgan.sampling import (ImageGenerator, compute_w_avg, format_seeds, grid_image, latent_for_seed,
                             latents_for_seeds, parse_grid, parse_seeds, write_grid,
                             write_samples)

TINY = "_tiny_test_gen"


@dataclass
class TinyGenConfig:
    resolution: int = option(8, min=4, max=64)
    z_dim: int = option(6, min=1)


class TinyGen(nn.Module):
    """Contract-only generator: linear mapping, linear synthesis, ImageNet normalisation, values beyond range."""

    normalization = "imagenet"
    n_latent = None

    def __init__(self, cfg: TinyGenConfig):
        super().__init__()
        self.z_dim, self.resolution = cfg.z_dim, cfg.resolution
        self.map = nn.Linear(cfg.z_dim, 10)
        self.syn = nn.Linear(10, 3 * cfg.resolution ** 2)

    def mapping(self, z):
        return torch.relu(self.map(z)) + 0.1

    def synthesis(self, w):
        return 6 * torch.tanh(self.syn(w)).view(-1, 3, self.resolution, self.resolution)

    def forward(self, z, psi=1.0, w_avg=None):
        w = self.mapping(z)
        if psi != 1.0:
            w = torch.lerp(w_avg, w, psi)
        return self.synthesis(w)


if TINY not in registry._REGISTRY:
    @registry.register_model(TINY, config=TinyGenConfig, description="test-only generator for sample/fid tests")
    def _build(cfg):
        return TinyGen(cfg), nn.Linear(1, 1)


def tiny_checkpoint(path, *, resolution=8, different_raw=False, recipe=None):
    torch.manual_seed(1)
    ema = TinyGen(TinyGenConfig(resolution=resolution))
    raw = TinyGen(TinyGenConfig(resolution=resolution)) if different_raw else ema
    ckpt = ckpt_io.make_checkpoint(model_name=TINY, model_config={"resolution": resolution}, recipe=recipe,
                                   normalization="imagenet", G=raw.state_dict(), G_ema=ema.state_dict(), step=7)
    ckpt_io.save(ckpt, path)
    return ema.eval(), raw.eval()


@pytest.fixture
def G():
    torch.manual_seed(3)
    return TinyGen(TinyGenConfig()).eval()


def reference_images(G, seeds, psi=1.0, w_avg=None):
    """What each seed should give: one forward per seed, quantised with the model's normalisation."""
    with torch.no_grad():
        out = []
        for s in seeds:
            z = latent_for_seed(s, G.z_dim)
            out.append(to_uint8(G(z) if psi == 1.0 else G(z, psi=psi, w_avg=w_avg), G.normalization))
        return torch.cat(out)


# ------------------------------------------------------------------------------------------ seeds


def test_seed_lists_are_streamed_ranges_not_lists_of_ints():
    """`--seeds 0-49999999` once took 3 GB before the first image; now it is a few range objects."""
    import sys

    seeds = parse_seeds("0-49999999,7,49999990-50000009,3-5")
    assert len(seeds) == 50_000_010 and sys.getsizeof(seeds.ranges()) < 1000
    assert seeds[0] == 0 and seeds[49_999_999] == 49_999_999 and seeds[50_000_000] == 50_000_000
    assert seeds[-1] == 50_000_009 and seeds[2:5] == [2, 3, 4]
    assert format_seeds(seeds) == "0-50000009"
    overlapping = parse_seeds("10-20,5-15,25,18-30")
    assert list(overlapping) == [*range(10, 21), *range(5, 10), 25, *range(21, 25), *range(26, 31)]
    assert format_seeds(overlapping) == "10-20,5-9,25,21-24,26-30"
    gen_chunks = [c for c, _ in ImageGenerator(TinyGen(TinyGenConfig()), batch_size=3).batches(parse_seeds("4-10"))]
    assert gen_chunks == [[4, 5, 6], [7, 8, 9], [10]]


def test_parse_seeds_lists_ranges_and_duplicates():
    assert parse_seeds("0,3,10-13") == [0, 3, 10, 11, 12, 13]
    assert parse_seeds(" 5 , 2-3, 5, 2") == [5, 2, 3]
    assert parse_seeds("7") == [7]
    assert format_seeds([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert parse_seeds(format_seeds([0, 1, 2, 5, 7, 8])) == [0, 1, 2, 5, 7, 8]


@pytest.mark.parametrize("text", ["", "5-1", "a", "-3", "1,,2", "1.5", "0-2000000000000"])
def test_parse_seeds_rejects_bad_lists(text):
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(text)


def test_seed_latent_matches_official_inference_draw():
    # official inference.py: torch.random.manual_seed(seed); z = torch.randn(1, 512) on the CPU
    torch.manual_seed(42)
    assert torch.equal(latent_for_seed(42, 512), torch.randn(1, 512))
    rows = latents_for_seeds([3, 9], 16)
    assert torch.equal(rows[1:], latent_for_seed(9, 16))


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_same_image_regardless_of_batch(G):
    seeds = [3, 7, 11, 12, 40]
    expected = reference_images(G, seeds)
    for batch in (1, 2, 5):
        got = torch.cat([imgs for _, imgs in ImageGenerator(G, batch_size=batch).batches(seeds)])
        assert torch.equal(got, expected)
    # seed 11 inside a different batch composition
    other = ImageGenerator(G, batch_size=4).images([99, 11, 0, 5])
    assert torch.equal(other[1], expected[2])


def test_out_of_memory_halves_the_batch_and_keeps_the_images(G):
    expected = reference_images(G, range(7))
    original = G.synthesis

    def picky(w):
        if len(w) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(w)

    G.synthesis = picky
    gen = ImageGenerator(G, batch_size=7)
    got = torch.cat([imgs for _, imgs in gen.batches(range(7))])
    assert torch.equal(got, expected) and gen.batch_size <= 2


def test_output_is_quantised_like_to_uint8_and_clamped(G):
    with torch.no_grad():
        raw = G(latent_for_seed(0, G.z_dim))
    img = ImageGenerator(G).images([0])
    assert img.dtype == torch.uint8
    assert torch.equal(img, to_uint8(raw, "imagenet"))
    assert (img == 0).any() and (img == 255).any()  # the tiny model overshoots: clamping is exercised


def test_truncation_one_is_identity_and_zero_collapses(G):
    w_avg = compute_w_avg(G, num=500)
    plain = ImageGenerator(G).images([1, 2, 3])
    assert torch.equal(ImageGenerator(G, psi=1.0, w_avg=w_avg).images([1, 2, 3]), plain)
    collapsed = ImageGenerator(G, psi=0.0, w_avg=w_avg).images([1, 2, 3])
    assert torch.equal(collapsed[0], collapsed[1]) and torch.equal(collapsed[1], collapsed[2])
    half = ImageGenerator(G, psi=0.5, w_avg=w_avg).images([1])
    assert torch.equal(half, reference_images(G, [1], psi=0.5, w_avg=w_avg))


def test_w_avg_is_deterministic_and_batch_independent(G):
    a = compute_w_avg(G, num=300, batch_size=300)
    b = compute_w_avg(G, num=300, batch_size=7)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert a.shape == (10,)


# ------------------------------------------------------------------------------------- exports


def test_png_files_hold_exactly_the_generated_pixels(G, tmp_path):
    files = write_samples(G, [4, 0, 12], tmp_path, fmt="png", batch_size=2)
    assert [f.name for f in files] == ["seed0004.png", "seed0000.png", "seed0012.png"]
    expected = reference_images(G, [4, 0, 12]).permute(0, 2, 3, 1).numpy()
    for f, want in zip(files, expected):
        assert np.array_equal(np.asarray(Image.open(f)), want)
    assert not list(tmp_path.glob(".*tmp*"))


def test_zip_and_npz_exports(G, tmp_path):
    seeds = list(range(5))
    expected = reference_images(G, seeds).permute(0, 2, 3, 1).numpy()
    (zpath,) = write_samples(G, seeds, tmp_path / "z", fmt="zip", batch_size=2)
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == [f"seed{s:04d}.png" for s in seeds]
        for s in seeds:
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(zf.read(f"seed{s:04d}.png")))), expected[s])
    (npath,) = write_samples(G, seeds, tmp_path / "n", fmt="npz", batch_size=3)
    with np.load(npath, allow_pickle=False) as data:
        assert data["images"].dtype == np.uint8 and data["images"].shape == (5, 8, 8, 3)
        assert np.array_equal(data["images"], expected)
        assert data["seeds"].tolist() == seeds


def test_failed_export_leaves_no_archive(G, tmp_path):
    class Boom(RuntimeError):
        pass

    calls = {"n": 0}
    original = G.synthesis

    def failing(w):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Boom("generator failed")
        return original(w)

    G.synthesis = failing
    for fmt in ("zip", "npz"):
        calls["n"] = 0
        with pytest.raises(Boom):
            write_samples(G, list(range(6)), tmp_path, fmt=fmt, batch_size=2)
        assert list(tmp_path.iterdir()) == []


def test_grid_tiles_row_major(G, tmp_path):
    assert parse_grid("3x2") == (3, 2)
    with pytest.raises(ConfigError):
        parse_grid("3by2")
    seeds = [5, 6, 7, 8, 9, 10]
    path = write_grid(G, seeds, tmp_path / "grid.png", 3, 2, batch_size=4)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (16, 24, 3)
    tiles = reference_images(G, seeds).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(grid[8:16, 0:8], tiles[3])    # row 1, column 0
    assert np.array_equal(grid[0:8, 16:24], tiles[2])   # row 0, column 2
    assert np.array_equal(grid_image(reference_images(G, seeds), 3, 2), grid)


@pytest.mark.parametrize("walks, space, loop, psi", [([[2, 9]], "w", False, 1.0), ([[2, 9, 4]], "z", False, 0.7),
                                                    ([[2, 9], [5, 1]], "w", True, 1.0)])
def test_walk_keyframes_are_the_seeds_images_and_one_naming_rule(G, tmp_path, walks, space, loop, psi):
    """Every --interpolate walk writes OUTDIR/interp_<seeds>[_z][_loop].gif and its frames in the folder of that
    name; a frame on a keyframe (both ends of an open walk) equals `sample --seeds` of that seed exactly."""
    from natgan.latent.walk import keyframes, write_walk
    from natgan.sampling import compute_w_avg

    w_avg = compute_w_avg(G) if psi != 1.0 else None
    files = write_walk(G, walks, 7, tmp_path, space=space, loop=loop, psi=psi, w_avg=w_avg, batch_size=3)
    stem = "interp_" + "-".join("_".join(map(str, w)) for w in walks) + ("_z" if space == "z" else "") + \
        ("_loop" if loop else "")
    frames = sorted((tmp_path / stem).glob("frame*.png"))
    assert len(frames) == 7 and files[-1] == tmp_path / f"{stem}.gif" and Image.open(files[-1]).format == "GIF"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([stem, f"{stem}.gif"])
    if len(walks) == 1:
        marks = keyframes(walks[0], 7, loop)
        assert marks[0] == walks[0][0] and (loop or marks[6] == walks[0][-1])
        for frame, seed in marks.items():
            want = reference_images(G, [seed], psi=psi, w_avg=w_avg)[0].permute(1, 2, 0).numpy()
            assert np.array_equal(np.asarray(Image.open(frames[frame])), want), (frame, seed)


# ----------------------------------------------------------------------------------------- CLI


def run_cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_sample_png_json_and_ema_choice(tmp_path, capsys):
    ema, raw = tiny_checkpoint(tmp_path / "run.pt", different_raw=True)
    code, out, _ = run_cli(["sample", "--ckpt", str(tmp_path / "run.pt"), "--seeds", "0,3-4", "--outdir",
                            str(tmp_path / "out"), "--device", "cpu", "--batch", "2", "--json", "-q"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["ema"] is True and info["seeds"] == "0,3-4" and info["images"] == 3
    assert [p.rsplit("/", 1)[1] for p in info["files"]] == ["seed0000.png", "seed0003.png", "seed0004.png"]
    got = np.asarray(Image.open(tmp_path / "out" / "seed0003.png"))
    assert np.array_equal(got, reference_images(ema, [3])[0].permute(1, 2, 0).numpy())

    code, out, _ = run_cli(["sample", "--ckpt", str(tmp_path / "run.pt"), "--seeds", "3", "--outdir",
                            str(tmp_path / "raw"), "--no-ema", "--json", "-q"], capsys)
    assert code == 0 and json.loads(out)["ema"] is False
    got = np.asarray(Image.open(tmp_path / "raw" / "seed0003.png"))
    assert np.array_equal(got, reference_images(raw, [3])[0].permute(1, 2, 0).numpy())


def test_cli_sample_grid_trunc_and_walk(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "run.pt")
    ck = str(tmp_path / "run.pt")
    code, out, _ = run_cli(["sample", "--ckpt", ck, "--grid", "4x2", "--trunc", "0.7", "--outdir",
                            str(tmp_path / "g"), "-q"], capsys)
    assert code == 0 and "4x2 grid" in out
    assert np.asarray(Image.open(tmp_path / "g" / "grid.png")).shape == (16, 32, 3)
    code, out, _ = run_cli(["sample", "--ckpt", ck, "--interpolate", "1,2", "--frames", "4", "--format", "zip",
                            "--outdir", str(tmp_path / "w"), "--json", "-q"], capsys)
    assert code == 0
    files = json.loads(out)["files"]
    assert files[0].endswith("interp_1_2.zip") and files[1].endswith("interp_1_2.gif")
    code, out, _ = run_cli(["sample", "--ckpt", ck, "--interpolate", "1,2,3", "--frames", "4", "--video", "gif,mp4",
                            "--outdir", str(tmp_path / "w"), "--json", "-q"], capsys)
    assert code == 0  # a keyframe walk follows the same rule: frames folder + one video per format
    assert sorted(p.rsplit("/", 1)[1] for p in json.loads(out)["files"])[-2:] == ["interp_1_2_3.gif",
                                                                                  "interp_1_2_3.mp4"]
    assert len(list((tmp_path / "w" / "interp_1_2_3").glob("frame*.png"))) == 4


@pytest.mark.parametrize("argv, code, message", [
    (["--seeds", "9-3"], 2, "ends before it starts"),
    (["--grid", "2x2", "--seeds", "0-2"], 2, "needs 4 seeds"),
    (["--grid", "2x2", "--format", "zip"], 2, "writes one PNG"),
    (["--interpolate", "1", "--frames", "3"], 2, "two seeds"),
    (["--format", "tiff"], 2, "--format 'tiff'"),
    (["--device", "cuda:7"], 2, "--device"),
])
def test_cli_sample_bad_arguments(tmp_path, capsys, argv, code, message):
    tiny_checkpoint(tmp_path / "run.pt")
    got, out, err = run_cli(["sample", "--ckpt", str(tmp_path / "run.pt"), "--outdir", str(tmp_path / "o"), *argv],
                            capsys)
    assert got == code
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_sample_missing_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(["sample", "--ckpt", str(tmp_path / "nope.pt")], capsys)
    assert code == 1 and "nope.pt: checkpoint not found" in err


# ------------------------------------------------------------------------------ a real model


def test_stylegan2_seeds_reproducible_with_const_noise(tmp_path, capsys):
    from natgan.models import create

    pair = create("stylegan2", resolution=8, style_dim=16, n_mlp=2, channel_max=16, channel_multiplier=1)
    with torch.no_grad():  # noise strengths start at zero; make the noise matter
        for name, p in pair.generator.named_parameters():
            if "noise" in name:
                p.fill_(0.5)
    ckpt = ckpt_io.make_checkpoint(model_name="stylegan2", model_config=vars(pair.config).copy(), recipe=None,
                                   normalization="symmetric", G=pair.generator.state_dict())
    ckpt_io.save(ckpt, tmp_path / "sg2.pt")
    outputs = []
    for batch, seeds, noise in ((1, "0-3", "const"), (4, "3,0-2", "const"), (4, "0-3", "random")):
        out = tmp_path / f"b{batch}{noise}"
        code, _, err = run_cli(["sample", "--ckpt", str(tmp_path / "sg2.pt"), "--seeds", seeds, "--batch", str(batch),
                                "--format", "npz", "--outdir", str(out), "--noise-mode", noise, "-q"], capsys)
        assert code == 0, err
        with np.load(out / "samples.npz") as data:
            outputs.append(dict(zip(data["seeds"].tolist(), data["images"])))
    for seed in range(4):
        diff = np.abs(outputs[0][seed].astype(int) - outputs[1][seed].astype(int)).max()
        assert diff <= 1, f"seed {seed} changed by {diff} levels with the batch composition"
    assert not np.array_equal(outputs[0][0], outputs[0][1])
    assert not np.array_equal(outputs[0][0], outputs[2][0])  # random noise would not be reproducible


def test_stylenat_checkpoint_samples_match_a_direct_forward(tmp_path, capsys):
    """A real ImageNet-normalised model: CLI output == to_uint8(G_ema(z_seed)) for any batch composition."""
    from natgan.models import create

    pair = create("stylenat", resolution=16, style_dim=32, n_mlp=2, channels=[32, 32, 32], min_heads=2, kernel_size=3)
    G = pair.generator.eval()
    ckpt = ckpt_io.make_checkpoint(model_name="stylenat", model_config=vars(pair.config).copy(), recipe=None,
                                   normalization=G.normalization, G=G.state_dict(), G_ema=G.state_dict())
    ckpt_io.save(ckpt, tmp_path / "nat.pt")
    code, _, err = run_cli(["sample", "--ckpt", str(tmp_path / "nat.pt"), "--seeds", "5,1-3", "--batch", "3",
                            "--format", "npz", "--outdir", str(tmp_path), "-q"], capsys)
    assert code == 0, err
    expected = reference_images(G, [5, 1, 2, 3]).permute(0, 2, 3, 1).numpy().astype(int)
    with np.load(tmp_path / "samples.npz") as data:
        assert data["seeds"].tolist() == [5, 1, 2, 3]
        assert np.abs(data["images"].astype(int) - expected).max() <= 1


def test_scale_enlarges_every_written_image_exactly(tmp_path, capsys):
    """--scale N writes each pixel as an N x N square (PNG files, zip members, grids, walk frames and GIFs,
    visualize sheets); npz data keeps its size, so --scale with --format npz is refused."""
    import zipfile

    tiny_checkpoint(tmp_path / "run.pt")
    ck = str(tmp_path / "run.pt")

    def big(a):
        return np.repeat(np.repeat(a, 3, axis=0), 3, axis=1)

    assert run_cli(["sample", "--ckpt", ck, "--seeds", "0-1", "--outdir", str(tmp_path / "one"), "-q"], capsys)[0] == 0
    for args in (["--seeds", "0-1"], ["--grid", "1x2"], ["--seeds", "0-1", "--format", "zip"],
                 ["--interpolate", "0,1", "--frames", "3"]):
        out = tmp_path / f"x{len(list(tmp_path.iterdir()))}"
        code, _, err = run_cli(["sample", "--ckpt", ck, *args, "--outdir", str(out), "--scale", "3", "-q"], capsys)
        assert code == 0, err
        if args[0] == "--seeds" and len(args) == 2:
            assert np.array_equal(np.asarray(Image.open(out / "seed0001.png")),
                                  big(np.asarray(Image.open(tmp_path / "one" / "seed0001.png"))))
        elif args[0] == "--grid":
            assert Image.open(out / "grid.png").size == (24, 48)
        elif "zip" in args:
            with zipfile.ZipFile(out / "samples.zip") as zf:
                member = np.asarray(Image.open(zf.open("seed0000.png")))
            assert np.array_equal(member, big(np.asarray(Image.open(tmp_path / "one" / "seed0000.png"))))
        else:
            assert np.array_equal(np.asarray(Image.open(out / "interp_0_1" / "frame0000.png")),
                                  big(np.asarray(Image.open(tmp_path / "one" / "seed0000.png"))))
            assert Image.open(out / "interp_0_1.gif").size == (24, 24)
    code, _, err = run_cli(["sample", "--ckpt", ck, "--format", "npz", "--scale", "2", "--outdir",
                            str(tmp_path / "n")], capsys)
    assert code == 2 and "--scale" in err
    code, _, err = run_cli(["sample", "--ckpt", ck, "--scale", "0", "--outdir", str(tmp_path / "z")], capsys)
    assert code == 2 and "--scale" in err
