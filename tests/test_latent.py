"""natgan.latent: projection, latents on disk, style mixing, walks, SeFa; LPIPS and PPL."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import tiny_model  # noqa: F401  (registers "_tiny_test")
from natgan.errors import ConfigError, NatGanError
from natgan.latent import mixing, sefa, walk
from natgan.latent.edit import images_from_stored
from natgan.latent.project import ProjectionSettings, learning_rate, project, w_noise_scale
from natgan.latent.store import load_latents, save_latents
from natgan.metrics import ppl
from natgan.metrics.lpips import LPIPS_VGG_FILE, LPIPS_VGG_URL, VGG16_FILE, VGG16_URL, load_lpips
from natgan.models import create
from natgan.models.contract import noise_inputs
from natgan.models.interpolation import slerp
from natgan.models.normalization import to_uint8, to_unit
from natgan.sampling.seeds import latents_for_seeds

SG2 = dict(resolution=16, style_dim=16, n_mlp=2, channel_max=16)
NAT = dict(resolution=16, style_dim=16, n_mlp=2, channels=[32, 32, 32], min_heads=2, kernel_size=3,
           d_channels=[16, 16, 16])
HIT = dict(resolution=16, low_res_stages=1, widths=[32, 16], heads=[4, 2], depths=[1, 1], block_sizes=[4], z_dim=16,
           d_channel_multiplier=1, d_max_channels=16)


@pytest.fixture(scope="module")
def lpips():
    return load_lpips(random_init=True)


def generator(name, **cfg):
    G = create(name, **cfg).generator.eval()
    if name == "stylegan2":  # noise strengths start at zero; make the noise matter
        with torch.no_grad():
            for n, p in G.named_parameters():
                if "noise" in n:
                    p.fill_(0.3)
    return G


def generated_target(G, seed):
    with torch.no_grad():
        return to_unit(G.synthesis(G.mapping(latents_for_seeds([seed], G.z_dim))), G.normalization)


# ------------------------------------------------------------------------------------------ LPIPS

def test_lpips_distance_properties(lpips):
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert torch.equal(lpips(x, x), torch.zeros(2))
    assert torch.allclose(lpips(x, y), lpips(y, x))
    assert (lpips(x, y) > 0).all() and lpips(x, y).shape == (2,)
    near = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    assert (lpips(x, near) < lpips(x, y)).all()


def test_lpips_missing_weights_names_both_files_and_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("NATGAN_OFFLINE", "1")
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(NatGanError) as info:
        load_lpips(tmp_path)
    message = str(info.value)
    for text in (VGG16_FILE, VGG16_URL, LPIPS_VGG_FILE, LPIPS_VGG_URL, str(tmp_path)):
        assert text in message
    assert "\n" not in message


def test_lpips_loads_the_official_file_layouts(tmp_path, monkeypatch):
    """torchvision's vgg16 state dict + LPIPS's ``lin{i}.model.1.weight`` layers give the LPIPS formula."""
    from torchvision.models import vgg16

    net = vgg16(weights=None)
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith("features.")}, tmp_path / VGG16_FILE)
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lins, tmp_path / LPIPS_VGG_FILE)
    with pytest.raises(NatGanError, match=f"{VGG16_FILE}: refused: sha256 [0-9a-f]{{64}} is not the official"):
        load_lpips(tmp_path)  # random stand-ins are not the published files: named explicitly below
    monkeypatch.setenv("NATGAN_UNOFFICIAL_WEIGHTS", f"{tmp_path / VGG16_FILE}{os.pathsep}{tmp_path / LPIPS_VGG_FILE}")
    model = load_lpips(tmp_path)
    assert model.pretrained and "NOT the official files" in model.weights_id
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    # independent evaluation: LPIPS scaling layer, relu taps after layers 3, 8, 15, 22, 29 of vgg16().features
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = {3: 0, 8: 1, 15: 2, 22: 3, 29: 4}
    feats = []
    for img in (x, y):
        h, out = (img * 2 - 1 - shift) / scale, []
        for i, layer in enumerate(net.features[:30]):
            h = layer(h)
            if i in taps:
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        feats.append(out)
    expected = sum(((a - b) ** 2 * lins[f"lin{i}.model.1.weight"]).sum(1).mean()
                   for i, (a, b) in enumerate(zip(*feats)))
    assert torch.allclose(model(x, y), expected.view(1), rtol=1e-4)
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / LPIPS_VGG_FILE)
    with pytest.raises(NatGanError, match="lin1.model.1.weight"):
        load_lpips(tmp_path)


# ------------------------------------------------------------------------------------------ projection

def test_schedule_matches_the_paper():
    s = ProjectionSettings(steps=1000)
    assert learning_rate(0.0, s) == 0.0
    assert learning_rate(0.05, s) == pytest.approx(0.1)
    assert learning_rate(0.5, s) == pytest.approx(0.1)
    assert learning_rate(0.875, s) == pytest.approx(0.05)
    assert w_noise_scale(0.0, 2.0, s) == pytest.approx(0.1)
    assert w_noise_scale(0.375, 2.0, s) == pytest.approx(0.025)
    assert w_noise_scale(0.8, 2.0, s) == 0.0


def test_projection_recovers_an_image_the_generator_made(lpips):
    G = generator("_tiny_test", resolution=16)
    target = generated_target(G, seed=11)
    result = project(G, target, lpips, ProjectionSettings(steps=50, w_avg_samples=500, mse_weight=1.0))
    assert result.latents.space == "w" and result.latents.w.shape == (1, G.map.out_features)
    assert result.lpips < 0.1 * result.start_lpips
    assert result.mse < 0.1 * result.start_mse
    assert result.history[-1]["step"] == 50 and len(result.history) == 50


@pytest.mark.usefixtures("one_thread")  # bitwise equality of two optimisations: reductions in one order
def test_projection_is_deterministic_with_a_seed_and_optimises_noise(lpips):
    G = generator("stylegan2", **SG2)
    target = generated_target(G, seed=5)
    runs = [project(G, target, lpips, ProjectionSettings(steps=4, w_avg_samples=200, seed=s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0].latents.w, runs[1].latents.w)
    assert all(torch.equal(runs[0].latents.noise[k], runs[1].latents.noise[k]) for k in runs[0].latents.noise)
    assert not torch.equal(runs[0].latents.w, runs[2].latents.w)
    maps = runs[0].latents.noise
    assert set(maps) == set(noise_inputs(G)) and maps
    for m in maps.values():  # re-normalised after every step
        assert abs(float(m.mean())) < 1e-5 and float(m.square().mean()) == pytest.approx(1.0, abs=1e-4)
    # the model's own noise buffers are untouched
    assert all(torch.equal(noise_inputs(G)[k], dict(G.named_buffers())[k]) for k in maps)


def test_latents_round_trip_and_resume(tmp_path, lpips):
    G = generator("stylegan2", **SG2)
    target = generated_target(G, seed=3)
    first = project(G, target, lpips, ProjectionSettings(steps=6, space="wplus", w_avg_samples=200))
    assert first.latents.w.shape == (1, G.n_latent, G.w_dim)
    path = save_latents(tmp_path / "w.npz", first.latents)
    back = load_latents(path)
    assert back.space == "wplus" and back.names == first.latents.names
    assert torch.equal(back.w, first.latents.w)
    assert all(torch.equal(back.noise[k], first.latents.noise[k]) for k in first.latents.noise)
    # the stored latent and noise regenerate the projection's final image exactly
    assert torch.equal(images_from_stored(G, back), first.image)
    # resuming starts where the first run ended
    resumed = project(G, target, lpips, ProjectionSettings(steps=2, space="wplus", w_avg_samples=200), init=back)
    assert resumed.start_lpips == pytest.approx(first.lpips, rel=1e-4)
    with pytest.raises(ConfigError, match="wplus"):
        project(G, target, lpips, ProjectionSettings(steps=1, space="w", w_avg_samples=10), init=back)


def test_a_continuation_continues_the_schedule(lpips):
    """`project --init` runs only the schedule's final phase: no second lr warm-up (the first step already moves
    at the full rate, ramping down to zero) and no w noise (so the seed no longer changes the result)."""
    G = generator("stylegan2", **SG2)
    target = generated_target(G, seed=5)
    first = project(G, target, lpips, ProjectionSettings(steps=20, w_avg_samples=200, seed=1))
    assert first.history[0]["lr"] == 0.0  # a fresh projection warms up
    settings = [ProjectionSettings(steps=8, w_avg_samples=200, seed=s) for s in (1, 2)]
    runs = [project(G, target, lpips, s, init=first.latents) for s in settings]
    lrs = [h["lr"] for h in runs[0].history]
    assert lrs[0] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0
    assert torch.equal(runs[0].latents.w, runs[1].latents.w)  # no w noise: the seed does not matter
    assert runs[0].start_lpips == pytest.approx(first.lpips, rel=1e-4)
    assert not any(s.continuation for s in settings)  # the caller's settings are not modified


def test_models_without_mapping_project_in_z(lpips):
    G = generator("hit", **HIT)
    result = project(G, generated_target(G, 2), lpips, ProjectionSettings(steps=2, w_avg_samples=100))
    assert result.latents.space == "z" and result.latents.w.shape == (1, G.z_dim)
    with pytest.raises(ConfigError, match="no mapping network"):
        project(G, generated_target(G, 2), lpips, ProjectionSettings(steps=1, space="wplus"))


# ------------------------------------------------------------------------------------------ style mixing

def test_style_mixing_cells_take_the_chosen_rows_from_the_column_latent():
    G = generator("stylenat", **NAT)
    rows, cols, layers = [4, 9], [1, 2, 3], [0, 1, 2]
    row_imgs, col_imgs, cells = mixing.style_mixing_images(G, rows, cols, layers, batch_size=4)
    assert cells.shape == (len(rows) * len(cols), 3, 16, 16)
    with torch.no_grad():
        w_r = G.mapping(latents_for_seeds(rows, G.z_dim))
        w_c = G.mapping(latents_for_seeds(cols, G.z_dim))
        for r in range(len(rows)):
            for c in range(len(cols)):
                w = w_r[r:r + 1].clone()
                w[:, layers] = w_c[c:c + 1, layers]
                expected = to_uint8(G.synthesis(w), G.normalization)[0]
                assert (cells[r * len(cols) + c].int() - expected.int()).abs().max() <= 1
        assert (row_imgs.int() - to_uint8(G.synthesis(w_r), G.normalization).int()).abs().max() <= 1
    # mixing really changes the image, and no layer taken = the row image
    assert not torch.equal(cells[0], row_imgs[0])
    figure = mixing.style_mixing_figure(row_imgs, col_imgs, cells)
    assert figure.shape == (16 * (len(rows) + 1), 16 * (len(cols) + 1), 3)
    assert figure[:16, :16].max() == 0
    assert np.array_equal(figure[:16, 16:32], col_imgs[0].permute(1, 2, 0).numpy())
    assert np.array_equal(figure[32:48, :16], row_imgs[1].permute(1, 2, 0).numpy())
    assert np.array_equal(figure[32:48, 48:64], cells[5].permute(1, 2, 0).numpy())


def test_style_mixing_needs_several_latents():
    with pytest.raises(ConfigError, match="one latent per layer"):
        mixing.style_mixing_images(generator("hit", **HIT), [1], [2], [0])


# ------------------------------------------------------------------------------------------ walks and video

def test_walk_positions_keyframes_and_loop():
    index, t = walk.positions(3, 5, loop=False)
    assert index.tolist() == [0, 0, 1, 1, 1] and t.tolist() == pytest.approx([0, 0.5, 0, 0.5, 1])
    index, t = walk.positions(2, 4, loop=True)  # 0 -> 1 -> back to 0, last frame left out
    assert index.tolist() == [0, 0, 1, 1] and t.tolist() == pytest.approx([0, 0.5, 0, 0.5])
    G = generator("_tiny_test", resolution=16)
    z = latents_for_seeds([1, 2], G.z_dim)
    w = walk.walk_latents(G, [1, 2], 3, space="z")
    with torch.no_grad():
        assert torch.allclose(w[0], G.mapping(z[:1])[0], atol=1e-5)
        assert torch.allclose(w[-1], G.mapping(z[1:])[0], atol=1e-5)
    mid = slerp(z[:1], z[1:], torch.tensor([0.5]))
    assert mid.norm() == pytest.approx(float(z.norm(dim=1).mean()), rel=0.05)


def test_mp4_decodes_to_the_right_frames(tmp_path):
    from natgan.sampling.video import read_mp4, save_video

    G = generator("_tiny_test", resolution=16)
    frames = walk.render_walks(G, [[1, 2, 3], [4, 5]], 9, loop=True)
    assert frames[0].shape == (16, 32, 3)  # two walks side by side
    paths = save_video(tmp_path / "walk", frames, ["mp4", "gif"], fps=12)
    decoded, fps = read_mp4(paths[0])
    assert len(decoded) == 9 and decoded[0].shape == (16, 32, 3) and fps == 12
    assert paths[1].suffix == ".gif" and paths[1].stat().st_size > 0
    # lossy H.264 (4:2:0 chroma), yet the same pictures in the same order: smooth frames survive closely
    y, x = np.mgrid[0:24, 0:40]
    smooth = [np.stack([x * 6, y * 10, np.full_like(x, 25 * k)], -1).astype(np.uint8) for k in range(7)]
    decoded, _ = read_mp4(save_video(tmp_path / "smooth", smooth, ["mp4"], fps=5)[0])
    errors = np.array([[np.abs(a.astype(int) - b.astype(int)).mean() for b in smooth] for a in decoded])
    assert errors.diagonal().max() < 4 and (errors.argmin(axis=1) == np.arange(7)).all()


# ------------------------------------------------------------------------------------------ SeFa

def _normalised_rows(weights):
    a = torch.cat(weights).double()
    return a / a.norm(dim=1, keepdim=True)


def test_sefa_directions_are_orthonormal_eigenvectors_of_the_style_weights():
    G = generator("stylegan2", **SG2)
    result = sefa.factorize(G, [0, 1], selection="all")
    # every style layer reading rows 0 and 1: conv1, to_rgb1 and the first upsampling conv
    mods = [G.conv1.conv.modulation, G.to_rgb1.conv.modulation, G.convs[0].conv.modulation]
    assert result.modules == ["conv1.conv.modulation", "to_rgb1.conv.modulation", "convs.0.conv.modulation"]
    a = _normalised_rows([m.weight.detach() * m.scale for m in mods])
    matrix = (a.T @ a).float()
    assert torch.allclose(result.matrix, matrix, atol=1e-5)
    v = result.vectors
    assert torch.allclose(v @ v.T, torch.eye(len(v)), atol=1e-5)
    assert torch.allclose(v @ matrix, result.values[:, None] * v, atol=1e-4)
    assert (result.values[:-1] >= result.values[1:]).all()
    assert result.values.sum() == pytest.approx(float(matrix.trace()), rel=1e-4)


def _genforce_style_factorisation(G, rows):
    """genforce/sefa's ``factorize_weight`` re-derived for a StyleGAN2 (rosinality layout): w row ``i`` is read
    by ``layer{i}`` = the i-th modulated conv (``conv1``, then ``convs.*``), and the last row by the last ToRGB
    (genforce's ``output{L // 2}``); the raw ``style.weight.T`` columns are stacked, each normalised, and
    ``np.linalg.eig(W W^T)`` in float32 gives the directions (sorted here; genforce keeps eig's order)."""
    convs = [G.conv1] + list(G.convs)
    last = len(convs)   # = n_latent - 1
    picked = [(convs[i] if i < last else G.to_rgbs[-1]).conv.modulation.weight.detach().numpy().T for i in rows]
    w = np.concatenate(picked, axis=1).astype(np.float32)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(w.dot(w.T))
    order = np.argsort(-values.real)
    return vectors.real.T[order], values.real[order], len(picked)


@pytest.mark.parametrize("rows", [None, [0, 1, 2, 3], [3, 4, 5, 6, 7]])
def test_sefa_official_selection_equals_genforce_factorize_weight(rows):
    G = create("stylegan2", resolution=32, style_dim=64, n_mlp=2, channel_max=32).generator.eval()
    gen = torch.Generator().manual_seed(5)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=gen))[0]
    spread = basis * torch.logspace(0.6, -0.6, 64) @ basis.T   # trained-like: well separated top directions
    with torch.no_grad():
        for name, m in G.named_modules():
            if name.endswith("modulation"):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) @ spread
                               + 0.3 * torch.randn(m.weight.shape[0], 1, generator=gen))
    wanted = list(range(G.n_latent)) if rows is None else rows
    theirs, values, n_layers = _genforce_style_factorisation(G, wanted)
    ours = sefa.factorize(G, rows)
    assert len(ours.modules) == n_layers
    assert not any(sefa.is_to_rgb(m) for m in ours.modules if not m.startswith(f"to_rgbs.{len(G.to_rgbs) - 1}."))
    cos = np.abs((ours.vectors[:10].double().numpy() * theirs[:10]).sum(axis=1))
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(ours.values[:10].numpy(), values[:10], rtol=1e-4)
    # the wider selection adds the intermediate ToRGBs (rows 1, 3, 5, ...) and gives other directions
    wide = sefa.factorize(G, rows, selection="all")
    assert len(wide.modules) > len(ours.modules) and any("to_rgb1" in m for m in wide.modules) == (1 in wanted)
    assert np.abs((wide.vectors[:10].double().numpy() * theirs[:10]).sum(axis=1)).min() < 0.99


def test_sefa_edit_moves_only_the_factorised_rows(tmp_path):
    G = generator("stylegan2", **SG2)
    dirs = sefa.factorize(G, [2, 3])
    path = dirs.save(tmp_path / "d.npz", model="stylegan2")
    d = sefa.load_direction(f"{path}:1")
    assert torch.equal(d.vector, dirs.vectors[1]) and d.layers == [2, 3]
    w = G.mapping(latents_for_seeds([0], G.z_dim)).detach()
    edits = sefa.edit_latents(w, d, [-1.0, 0.0, 2.0])
    assert torch.equal(edits[1], w[0])
    assert torch.allclose(edits[2, 2] - w[0, 2], 2 * d.vector) and torch.equal(edits[2, 0], w[0, 0])
    with pytest.raises(ConfigError, match="out of range"):
        sefa.load_direction(f"{path}:99")


def test_sefa_finds_style_layers_in_every_family():
    from natgan.models import create as make

    ganformer = make("ganformer", resolution=16, components=4, latent_dim=8, channel_max=16, attn_max_res=8,
                     mapping_layers=2).generator
    d = sefa.factorize(ganformer)
    assert d.vectors.shape[1] == ganformer.w_dim and len(d.values) == 8  # the global latent's 8 dims only
    assert torch.count_nonzero(d.vectors[:, :-8]) == 0
    nat = sefa.factorize(generator("stylenat", **NAT))
    assert all(m.endswith(("norm1.style", "norm2.style")) for m in nat.modules) and len(nat.modules) == 12
    hit = sefa.factorize(generator("hit", **HIT))
    assert hit.space == "z" and set(hit.modules) == {"initial", "latent_embed"}


# ------------------------------------------------------------------------------------------ PPL

def test_ppl_protocol_determinism_and_space(lpips):
    G = generator("stylegan2", **SG2)
    a = ppl.perceptual_path_length(G, lpips, n=6, batch=4, seed=1)
    b = ppl.perceptual_path_length(G, lpips, n=6, batch=3, seed=1)
    assert a["ppl"] > 0 and np.isfinite(a["ppl"])
    assert a["protocol"]["space"] == "w" and a["protocol"]["sampling"] == "end" and a["protocol"]["epsilon"] == 1e-4
    c = ppl.perceptual_path_length(G, lpips, n=6, batch=4, seed=2)
    assert a == ppl.perceptual_path_length(G, lpips, n=6, batch=4, seed=1) and c["ppl"] != a["ppl"]
    assert b["protocol"]["n"] == 6
    h = ppl.perceptual_path_length(generator("hit", **HIT), lpips, n=2, batch=2, sampling="full")
    assert h["protocol"]["space"] == "z" and "no mapping network" in h["protocol"]["path"]


def test_ppl_of_a_generator_that_ignores_its_latent_is_zero(lpips):
    G = generator("_tiny_test", resolution=16)
    with torch.no_grad():
        G.out.weight.zero_()
    assert ppl.perceptual_path_length(G, lpips, n=4, batch=2)["ppl"] == 0.0


def test_ppl_outlier_filter_keeps_the_1_to_99_percentiles():
    dist = np.concatenate([np.full(98, 1.0), [1000.0, -1000.0]])
    assert ppl.filtered_mean(dist, (1.0, 99.0)) == pytest.approx(1.0, abs=0.1)
    assert ppl.filtered_mean(np.arange(101.0), (10.0, 90.0)) == pytest.approx(50.0)


@pytest.mark.parametrize("resolution, side", [(256, 128), (512, 128), (1024, 128)])
def test_ppl_face_crop_reaches_lpips_as_in_stylegan2_ada_pytorch(resolution, side):
    """stylegan2-ada-pytorch's PPLSampler, re-derived: crop rows 3c:7c and columns 2c:6c (c = R // 8), then a
    box mean over factor x factor blocks with factor = R // 256 of the *uncropped* resolution."""
    images = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(resolution))
    c = resolution // 8
    crop = images[:, :, c * 3:c * 7, c * 2:c * 6]
    f = resolution // 256
    expected = crop.reshape(2, 3, crop.shape[2] // f, f, crop.shape[3] // f, f).mean((3, 5)) if f > 1 else crop
    ours = ppl._to_lpips_input(images, crop=True)
    assert ours.shape[-2:] == (side, side) == expected.shape[-2:]
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    # without the crop the whole image is scored at 256 px
    assert ppl._to_lpips_input(images, crop=False).shape[-1] == 256


def test_ppl_is_one_entry_of_the_metric_registry(lpips):
    """`nat-gan fid --metrics ppl` / `eval.metrics = ["ppl"]`: the registry runs the same function on G."""
    from natgan.metrics import evaluate_generator
    from natgan.metrics.registry import METRICS, scalars

    G = generator("stylegan2", **SG2)
    r = evaluate_generator(G, None, metrics="ppl", num=6, batch_size=8, seed=1, progress=False,
                           options={"lpips": lpips})
    direct = ppl.perceptual_path_length(G, lpips, n=6, batch=4, seed=1)
    assert METRICS["ppl"].generator and r["ppl"] == direct["ppl"]
    assert "lerp in w" in r["details"]["ppl"]["protocol"] and "6 samples" in r["details"]["ppl"]["protocol"]
    assert scalars(r, r["metrics"]) == {"ppl": r["ppl"]}
