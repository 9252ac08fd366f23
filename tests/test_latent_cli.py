"""`nat-gan project`, `nat-gan directions` and the latent modes of `nat-gan sample`, for every model family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natgan import checkpoint as ckpt_io
from natgan.models import create, list_models
from natgan.models.normalization import to_uint8
from natgan.sampling.seeds import latents_for_seeds
from reduced_models import REDUCED
from test_sample import run_cli

FAMILIES = REDUCED  # one reduced configuration per family, shared with the training/contract tests


def test_every_family_is_covered():
    names = {s.name for s in list_models() if not s.name.startswith("_")}
    assert {next(f for f in FAMILIES if n == f or n.startswith(f + "-")) for n in names} == set(FAMILIES)


def family_checkpoint(name, path):
    pair = create(name, **FAMILIES[name])
    G = pair.generator.eval()
    with torch.no_grad():  # noise strengths start at zero; make the noise matter
        for n, p in G.named_parameters():
            if "noise" in n and p.numel() == 1:
                p.fill_(0.3)
    ckpt = ckpt_io.make_checkpoint(model_name=name, model_config=vars(pair.config).copy(), recipe=None,
                                   normalization=G.normalization, G=G.state_dict(), G_ema=G.state_dict())
    ckpt_io.save(ckpt, path)
    return G


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_latent_tools_run_for_every_family(name, tmp_path, capsys):
    ckpt = tmp_path / f"{name}.pt"
    G = family_checkpoint(name, ckpt)
    with torch.no_grad():  # a 20x24 target: resized and centre-cropped to 16 like `prepare`
        img = to_uint8(G(latents_for_seeds([7], G.z_dim)), G.normalization)[0].permute(1, 2, 0).numpy()
    Image.fromarray(img).resize((20, 24)).save(tmp_path / "photo.png")
    proj = tmp_path / "proj"
    code, out, err = run_cli(["project", "--ckpt", str(ckpt), "--target", str(tmp_path / "photo.png"), "--outdir",
                              str(proj), "--steps", "3", "--random-lpips", "--w-avg-samples", "64", "--video",
                              "--json", "-q"], capsys)
    assert code == 0, err
    info = json.loads(out)
    row = info["targets"][0]
    assert info["space"] == ("z" if name == "hit" else "w") and info["steps"] == 3
    assert np.isfinite(row["lpips"]) and np.isfinite(row["mse"])
    for f in ("target.png", "proj.png", "compare.png", "projected_w.npz", "loss.csv", "loss.png", "proj.mp4"):
        assert (proj / "photo" / f).is_file(), f
    assert Image.open(proj / "photo" / "compare.png").size == (32, 16)
    assert len((proj / "photo" / "loss.csv").read_text().splitlines()) == 4

    # stored latents regenerate the projection exactly
    code, out, err = run_cli(["sample", "--ckpt", str(ckpt), "--w", str(proj / "projected_w.npz"), "--outdir",
                              str(tmp_path / "regen"), "-q"], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "regen" / "photo.png")),
                          np.asarray(Image.open(proj / "photo" / "proj.png")))

    # SeFa directions and an edit strip
    code, out, err = run_cli(["directions", "--ckpt", str(ckpt), "--out", str(tmp_path / "dirs.npz"), "--json"],
                             capsys)
    assert code == 0, err
    assert json.loads(out)["space"] == ("z" if name == "hit" else "w")
    code, out, err = run_cli(["sample", "--ckpt", str(ckpt), "--direction", f"{tmp_path / 'dirs.npz'}:0",
                              "--strength", "-3,3", "--steps", "3", "--seeds", "0,1", "--outdir", str(tmp_path),
                              "-q"], capsys)
    assert code == 0, err
    strip = np.asarray(Image.open(tmp_path / "direction0.png"))
    assert strip.shape == (32, 48, 3)
    assert not np.array_equal(strip[:16, :16], strip[:16, 32:])  # the edit changes the image

    # style mixing: a grid for multi-latent models, one clear line for HiT
    code, out, err = run_cli(["sample", "--ckpt", str(ckpt), "--style-mix", "1,2", "--with", "3,4,5", "--layers",
                              "0-1", "--outdir", str(tmp_path), "-q"], capsys)
    if name == "hit":
        assert code == 2 and "n_latent" in err and "Traceback" not in err
    else:
        assert code == 0, err
        assert Image.open(tmp_path / "stylemix.png").size == (16 * 4, 16 * 3)

    # a looping MP4 walk through three keyframes, in z
    code, out, err = run_cli(["sample", "--ckpt", str(ckpt), "--interpolate", "1,2,3", "--frames", "6", "--video",
                              "mp4", "--space", "z", "--loop", "--outdir", str(tmp_path / "walk"), "-q"], capsys)
    assert code == 0, err
    from natgan.sampling.video import read_mp4

    frames, _ = read_mp4(tmp_path / "walk" / "interp_1_2_3_z_loop.mp4")
    assert len(frames) == 6 and frames[0].shape == (16, 16, 3)


@pytest.fixture(scope="module")
def sg2_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("sg2") / "sg2.pt"
    family_checkpoint("stylegan2", path)
    return path


@pytest.mark.parametrize("argv, message", [
    (["--style-mix", "1,2"], "--with"),
    (["--with", "1"], "--style-mix"),
    (["--style-mix", "1", "--with", "2", "--layers", "0-99"], "out of range"),
    (["--loop"], "--interpolate"),
    (["--interpolate", "1,2", "--video", "avi"], "--video"),
    (["--interpolate", "1", "--video", "mp4"], "two seeds"),
    (["--direction", "missing.npz:0"], "not found"),
    (["--direction", "dirs.npz:x"], "FILE.npz:INDEX"),
    (["--w", "missing.npz"], "not found"),
    (["--style-mix", "1", "--with", "2", "--layers", "0", "--interpolate", "1,2,3"], "choose one"),
])
def test_sample_latent_option_errors_are_one_line(sg2_ckpt, tmp_path, capsys, argv, message):
    code, out, err = run_cli(["sample", "--ckpt", str(sg2_ckpt), "--outdir", str(tmp_path), *argv], capsys)
    assert code in (1, 2) and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_project_errors(sg2_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NATGAN_WEIGHTS", str(tmp_path))
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    code, _, err = run_cli(["project", "--ckpt", str(sg2_ckpt), "--target", str(tmp_path / "a.png"), "--steps",
                            "1", "-q"], capsys)
    assert code == 1 and "vgg16-397923af.pth" in err and "vgg.pth" in err and "https://" in err
    (tmp_path / "bad.png").write_bytes(b"not an image")
    code, _, err = run_cli(["project", "--ckpt", str(sg2_ckpt), "--target", str(tmp_path / "bad.png"),
                            "--random-lpips", "-q"], capsys)
    assert code == 1 and "bad.png" in err and "not a readable image" in err
    code, _, err = run_cli(["project", "--ckpt", str(sg2_ckpt), "--target", str(tmp_path / "nope"), "-q"], capsys)
    assert code == 1 and "target not found" in err
    code, _, err = run_cli(["project", "--ckpt", str(sg2_ckpt), "--target", str(tmp_path / "a.png"), "--space",
                            "zz", "--random-lpips", "-q"], capsys)
    assert code == 2 and "--space" in err


def test_project_a_folder_and_regenerate_all(sg2_ckpt, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b", "a"):
        Image.fromarray(rng.integers(0, 255, (18, 16, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image")
    code, out, err = run_cli(["project", "--ckpt", str(sg2_ckpt), "--target", str(folder), "--outdir",
                              str(tmp_path / "proj"), "--steps", "2", "--space", "wplus", "--random-lpips",
                              "--w-avg-samples", "32", "--json", "-q"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert [Path(t["target"]).name for t in info["targets"]] == ["a.png", "b.png"] and info["space"] == "wplus"
    with np.load(tmp_path / "proj" / "projected_w.npz") as data:
        assert data["names"].tolist() == ["a", "b"] and data["w"].shape[:1] == (2,) and data["w"].ndim == 3
        assert any(k.startswith("noise/") for k in data.files)
    code, _, err = run_cli(["sample", "--ckpt", str(sg2_ckpt), "--w", str(tmp_path / "proj" / "projected_w.npz"),
                            "--outdir", str(tmp_path / "regen"), "-q"], capsys)
    assert code == 0, err
    for name in ("a", "b"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "regen" / f"{name}.png")),
                              np.asarray(Image.open(tmp_path / "proj" / name / "proj.png")))
    # continuing one target from the all-targets file is refused, naming that target's own file
    code, _, err = run_cli(["project", "--ckpt", str(sg2_ckpt), "--target", str(folder / "b.png"), "--outdir",
                            str(tmp_path / "more"), "--init", str(tmp_path / "proj" / "projected_w.npz"), "--steps",
                            "1", "--space", "wplus", "--random-lpips", "--w-avg-samples", "32", "-q"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"holds 2 latents (a, b) for 1 target; continue this target with --init {tmp_path / 'proj' / 'b'}" \
        in " ".join(err.split()), err
