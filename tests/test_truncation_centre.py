"""One truncation centre for every sampling path (`natgan.sampling.truncation_centre`).

A checkpoint that stores a centre (an import's NVlabs ``w_avg`` / rosinality ``latent_avg``) must be truncated toward
that centre by ``sample --trunc`` in every mode (seeds, ``--style-mix``, ``--direction``, ``--interpolate``) and by
the metrics, so one seed gives one image everywhere. The stored centre here is deliberately far from the mean w
that nat-gan would compute, so a path that silently recomputes the centre puts different pixels on the page.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from natgan import checkpoint as ckpt_io
from natgan.latent import mixing
from natgan.models import create
from natgan.sampling import ImageGenerator, compute_w_avg, eval_mode, load_generator, truncation_centre
from reduced_models import REDUCED, reduced
from test_sample import run_cli

PSI = 0.5


def _checkpoint(path, *, num_classes: int = 0, stored: bool = True):
    """A reduced StyleGAN2 checkpoint whose ``extra.w_avg`` (when ``stored``) is the computed mean plus 1."""
    pair = create("stylegan2", **(reduced("stylegan2", num_classes) if num_classes else REDUCED["stylegan2"]))
    G = pair.generator.eval()
    extra = {}
    if stored:
        computed = compute_w_avg(G if not num_classes else _bound(G, 0), num=256)
        extra["w_avg"] = computed + 1.0
    ckpt = ckpt_io.make_checkpoint(model_name="stylegan2", model_config=vars(pair.config).copy(), recipe=None,
                                   normalization=G.normalization, G=G.state_dict(), G_ema=G.state_dict(),
                                   extra=extra)
    ckpt_io.save(ckpt, path)
    return extra.get("w_avg")


def _bound(G, label):
    from natgan.models.conditioning import ClassBoundGenerator
    return ClassBoundGenerator(G, label)


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def stored_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("centre") / "imported.pt"
    w_avg = _checkpoint(path)
    return path, w_avg


def _sample(capsys, *argv):
    code, out, err = run_cli(["sample", *map(str, argv), "--noise-mode", "const", "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    return out


def test_policy_order():
    G = create("stylegan2", **REDUCED["stylegan2"]).generator.eval()
    stored = torch.ones(G.mapping(torch.zeros(1, G.z_dim)).shape[-1])
    assert truncation_centre(G, PSI, stored) is stored                    # a stored centre wins
    assert truncation_centre(G, 1.0) is None                              # psi 1 needs none
    torch.testing.assert_close(truncation_centre(G, PSI), compute_w_avg(G))
    cond = create("stylegan2", **reduced("stylegan2", 3)).generator.eval()
    assert truncation_centre(cond, PSI) is None                           # unbound conditional: per-class centres
    torch.testing.assert_close(truncation_centre(_bound(cond, 2), PSI), compute_w_avg(_bound(cond, 2)))


def test_loaded_centre_is_the_stored_one(stored_ckpt, tmp_path):
    path, w_avg = stored_ckpt
    loaded = load_generator(path)
    torch.testing.assert_close(loaded.centre(PSI), w_avg)
    assert loaded.centre(1.0) is None
    assert not torch.allclose(compute_w_avg(loaded.G), w_avg)            # the test means something
    _checkpoint(tmp_path / "plain.pt", stored=False)
    plain = load_generator(tmp_path / "plain.pt")
    torch.testing.assert_close(plain.centre(PSI), compute_w_avg(plain.G))


def test_every_sample_mode_truncates_toward_the_stored_centre(stored_ckpt, tmp_path, capsys):
    """Seed images, style-mixing sources, the unedited column of a direction strip and a walk's first frame
    are the same pixels; style-mixing equals the library run with the stored centre, not with a computed one."""
    path, w_avg = stored_ckpt
    _sample(capsys, "--ckpt", path, "--seeds", "0,1,2", "--trunc", PSI, "--outdir", tmp_path / "seeds")
    seed = {s: _png(tmp_path / "seeds" / f"seed{s:04d}.png") for s in (0, 1, 2)}
    h = seed[0].shape[0]

    _sample(capsys, "--ckpt", path, "--style-mix", "0,1", "--with", "2", "--layers", "0-1", "--trunc", PSI,
            "--outdir", tmp_path / "mix")
    figure = _png(tmp_path / "mix" / "stylemix.png")
    assert np.array_equal(figure[h:2 * h, :h], seed[0]) and np.array_equal(figure[2 * h:3 * h, :h], seed[1])
    assert np.array_equal(figure[:h, h:2 * h], seed[2])
    G = load_generator(path).G
    layers = range(2)
    for centre, same in ((w_avg, True), (compute_w_avg(G), False)):
        parts = mixing.style_mixing_images(G, [0, 1], [2], layers, psi=PSI, w_avg=centre, noise_mode="const")
        assert np.array_equal(mixing.style_mixing_figure(*parts)[h:, h:], figure[h:, h:]) is same

    code, out, err = run_cli(["directions", "--ckpt", str(path), "--out", str(tmp_path / "dirs.npz")], capsys)
    assert code == 0, err
    _sample(capsys, "--ckpt", path, "--direction", f"{tmp_path / 'dirs.npz'}:0", "--strength", "-2,2", "--steps", 3,
            "--seeds", "0,1", "--trunc", PSI, "--outdir", tmp_path / "edit")
    strip = _png(tmp_path / "edit" / "direction0.png")
    assert np.array_equal(strip[:h, h:2 * h], seed[0]) and np.array_equal(strip[h:, h:2 * h], seed[1])

    _sample(capsys, "--ckpt", path, "--interpolate", "0,1", "--frames", 3, "--trunc", PSI,
            "--outdir", tmp_path / "walk")
    frames = sorted((tmp_path / "walk").rglob("*.png"))
    assert len(frames) == 3
    assert np.array_equal(_png(frames[0]), seed[0]) and np.array_equal(_png(frames[-1]), seed[1])


def test_json_says_which_centre(stored_ckpt, tmp_path, capsys):
    import json

    path, _ = stored_ckpt
    _checkpoint(tmp_path / "plain.pt", stored=False)
    for ckpt, trunc, kind in ((path, PSI, "stored"), (tmp_path / "plain.pt", PSI, "mean w"), (path, 1, None)):
        for mode in (["--seeds", "0"], ["--style-mix", "0", "--with", "1", "--layers", "0"]):
            info = json.loads(_sample(capsys, "--ckpt", ckpt, *mode, "--trunc", trunc, "--json",
                                      "--outdir", tmp_path / f"{ckpt.stem}{trunc}{mode[0]}"))
            assert info["trunc_centre"] == kind


def test_seed_images_differ_between_stored_and_computed_centre(stored_ckpt):
    path, w_avg = stored_ckpt
    G = load_generator(path).G
    with eval_mode(G, "const"):
        stored = ImageGenerator(G, batch_size=2, psi=PSI, w_avg=w_avg).images([0, 1])
        computed = ImageGenerator(G, batch_size=2, psi=PSI).images([0, 1])
    assert not torch.equal(stored, computed)


def test_intra_fid_truncates_toward_the_stored_centre(monkeypatch):
    """Per-class images of `fid --trunc` (intra-FID) use the centre the main FID images use."""
    import natgan.metrics.intra_fid as intra

    G = create("stylegan2", **reduced("stylegan2", 2)).generator.eval()
    stored = torch.full((G.mapping(torch.zeros(1, G.z_dim), torch.zeros(1, dtype=torch.long)).shape[-1],), 0.25)
    seen = []

    class Spy(ImageGenerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.w_avg)
            raise RuntimeError("stop")

    monkeypatch.setattr(intra, "ImageGenerator", Spy)
    monkeypatch.setattr(intra, "subset_statistics",
                        lambda *a, **k: type("Real", (), {"stats": None, "cached": False, "stats_file": None})())
    monkeypatch.setattr(intra, "statistics", lambda feats: feats)
    source = type("Labelled", (), {"labels": [0, 0, 1, 1], "path": "ref"})()
    with pytest.raises(RuntimeError, match="stop"):
        intra.intra_fid(G, source, None, per_class=2, seed=0, batch_size=2, psi=PSI, w_avg=stored,
                        class_names=["a", "b"])
    torch.testing.assert_close(seen[0], stored)
