"""`nat-gan studio`'s library (natgan.studio), without a browser: what the page shows is what the captured
`nat-gan sample` command writes, byte for byte, for every kind of latent the page can make, on every family,
unconditional and class-conditional (a tiny conditional model of every family, trained here on a folder of named
classes).

The page itself is driven in a real browser by tests/test_studio_browser.py.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from natgan.errors import ConfigError, DataError, NatGanError
from natgan.studio.catalog import expand
from natgan.studio.session import Studio, fraction
from natgan.studio.spec import LatentSpec
from reduced_models import REDUCED, reduced
from test_latent_cli import family_checkpoint
from test_sample import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def studio_for(paths, tmp_path, **kw) -> Studio:
    return Studio(expand(paths), torch.device("cpu"), random_lpips=True, workdir=tmp_path / "work", **kw)


def run_command(command: str, cwd: Path, capsys) -> list[Path]:
    """Run a captured `nat-gan sample` line as a user would (in the folder holding the .npz); the PNGs written."""
    argv = shlex.split(command)
    assert argv[:2] == ["nat-gan", "sample"]
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code, _, err = run_cli(argv[1:] + ["-q", "--device", "cpu"], capsys)
    finally:
        os.chdir(old)
    assert code == 0, err
    return sorted((cwd / "studio-capture").glob("*.png"))


def run_capture(capture, cwd: Path, capsys) -> np.ndarray:
    """The captured command's PNG: the same file, byte for byte, as the studio's."""
    written = run_command(capture.command, cwd, capsys)
    assert [p.name for p in written] == [capture.png.name]
    assert written[0].read_bytes() == capture.png.read_bytes()
    return np.asarray(Image.open(written[0]))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio")
    paths = {}
    for name in ("stylenat", "stylegan2", "hit"):
        paths[name] = folder / f"{name}.pt"
        family_checkpoint(name, paths[name])
    return paths


CLASSES = ["cat", "dog", "snow leopard"]  # sorted sub-folder names; one needs shell quoting


def labelled_dataset(folder: Path) -> Path:
    """A 16-px LMDB of noise images in three named class sub-folders (labels from the folders)."""
    from natgan.data import prepare_dataset

    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (folder / "src" / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) // (k + 1)
            Image.fromarray(pixels).save(folder / "src" / name / f"{i}.png")
    out = folder / "animals.lmdb"
    prepare_dataset(folder / "src", out, sizes=[16], labels="folders", workers=0, progress=False)
    return out


def conditional_checkpoint(name: str, data: Path, run: Path) -> Path:
    """One training step of a reduced class-conditional model on ``data`` (the checkpoint records its class
    names, as every conditional run does)."""
    from natgan import recipe as recipes
    from natgan.train import train

    extra = dict(update="simultaneous", r1_every=1, ema_start=1, ema_buffers="average") if name == "hit" else {}
    recipe = recipes.from_dict({"model": {"name": name, **reduced(name, num_classes=len(CLASSES))},
                                "data": {"path": str(data), "workers": 0},
                                "train": {"batch": 4, "iterations": 1, "checkpoint_every": 1, "sample_every": 1,
                                          "lr_decay": False, **extra}})
    train(recipe, run, show_progress=False)
    return run / "latest.pt"


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio-conditional")
    data = labelled_dataset(folder)
    return {name: conditional_checkpoint(name, data, folder / name) for name in sorted(REDUCED)}


SPECS = {
    "seed": LatentSpec(seed=3),
    "seed-psi": LatentSpec(seed=5, psi=0.7),
    "fraction-w": LatentSpec(seed=3.25, psi=0.8),
    "fraction-z": LatentSpec(seed=3.5, blend="z"),
    "mixing": LatentSpec(seed=2, mix_seed=9, mix_layers="0-1", psi=0.9),
    "direction": LatentSpec(seed=4, strengths=(2.5, 0.0, -1.5)),
    "noise-none": LatentSpec(seed=6.5, noise_mode="none"),
}


@pytest.mark.parametrize("family", ["stylenat", "stylegan2", "hit"])
def test_the_captured_command_writes_the_png_shown(family, ckpts, tmp_path, capsys):
    studio = studio_for([ckpts[family]], tmp_path)
    seen = []
    for key, spec in SPECS.items():
        if key == "mixing" and family == "hit":
            with pytest.raises(ConfigError, match="n_latent"):
                studio.render(0, spec)
            continue
        frame = studio.render(0, spec)
        assert frame.image.shape == (16, 16, 3) and frame.image.dtype == np.uint8 and frame.ms > 0
        capture = studio.capture(frame)
        assert np.array_equal(np.asarray(Image.open(capture.png)), frame.image)
        if spec.seed_only:
            assert "--seeds" in capture.command and "--w" not in capture.command
        else:
            assert f"--w {capture.latents.name}" in capture.command
        assert np.array_equal(run_capture(capture, capture.latents.parent, capsys), frame.image), key
        seen.append(frame.image)
    # every control changes the image
    for i in range(len(seen)):
        for j in range(i + 1, len(seen)):
            assert not np.array_equal(seen[i], seen[j])


def test_fractional_seeds_blend_the_neighbours(ckpts, tmp_path):
    studio = studio_for([ckpts["stylenat"]], tmp_path)
    a, b = (studio.render(0, LatentSpec(seed=s)) for s in (3, 4))
    whole = studio.render(0, LatentSpec(seed=3.0))
    assert np.array_equal(whole.image, a.image)
    # the blended latent lies between the two seeds' latents (w: linear)
    mid = studio.render(0, LatentSpec(seed=3.5)).latents.w
    assert torch.allclose(mid, (a.latents.w + b.latents.w) / 2, atol=1e-6)
    near = studio.render(0, LatentSpec(seed=3.001))
    assert np.abs(near.image.astype(int) - a.image.astype(int)).max() <= 3


def test_psi_zero_is_the_centre_for_every_seed(ckpts, tmp_path):
    studio = studio_for([ckpts["stylegan2"]], tmp_path)
    a, b = (studio.render(0, LatentSpec(seed=s, psi=0.0)) for s in (1, 2))
    assert np.array_equal(a.image, b.image)


def test_style_mixing_takes_the_chosen_rows(ckpts, tmp_path):
    studio = studio_for([ckpts["stylenat"]], tmp_path)
    base = studio.render(0, LatentSpec(seed=2)).latents.w
    other = studio.render(0, LatentSpec(seed=9)).latents.w
    mixed = studio.render(0, LatentSpec(seed=2, mix_seed=9, mix_layers="1")).latents.w
    assert torch.equal(mixed[:, 0], base[:, 0]) and torch.equal(mixed[:, 1], other[:, 1])
    with pytest.raises(ConfigError, match="out of range"):
        studio.render(0, LatentSpec(seed=2, mix_seed=9, mix_layers="0-99"))


def test_directions_are_computed_once_per_checkpoint(ckpts, tmp_path, monkeypatch):
    from natgan.studio import session

    calls = []
    real = session.factorize
    monkeypatch.setattr(session, "factorize", lambda G: calls.append(1) or real(G))
    studio = studio_for([ckpts["stylegan2"]], tmp_path)
    for s in (1.0, 2.0, -3.0):
        studio.render(0, LatentSpec(seed=1, strengths=(s,)))
    assert studio.directions(0).vectors.shape[0] >= 1 and len(calls) == 1


@pytest.mark.parametrize("spec, message", [
    (LatentSpec(seed=-1), "seed -1"),
    (LatentSpec(seed=2**31), "seed"),
    (LatentSpec(seed=float("nan")), "finite"),
    (LatentSpec(seed="abc"), "expected a number"),
    (LatentSpec(psi=7), "psi 7"),
    (LatentSpec(noise_mode="loud"), "noise mode"),
    (LatentSpec(blend="q"), "blend"),
    (LatentSpec(mix_seed=1.5, mix_layers="0"), "mix seed"),
    (LatentSpec(strengths=(1e9,)), "strength"),
])
def test_bad_controls_are_one_line_errors(ckpts, tmp_path, spec, message):
    studio = studio_for([ckpts["stylenat"]], tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        studio.render(0, spec)
    assert "\n" not in str(info.value)


def test_catalog_lists_run_directories_newest_first(ckpts, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for step in (100, 300, 200):
        (run / f"ckpt-{step:07d}.pt").write_bytes(ckpts["stylenat"].read_bytes())
    os.link(run / "ckpt-0000300.pt", run / "latest.pt")
    entries = expand([run, ckpts["hit"], run / "ckpt-0000100.pt"])
    assert [e.path.name for e in entries] == ["ckpt-0000300.pt", "ckpt-0000200.pt", "ckpt-0000100.pt", "hit.pt"]
    assert all(e.path.is_absolute() for e in entries)
    with pytest.raises(ConfigError, match="no such"):
        expand([tmp_path / "missing.pt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no checkpoints"):
        expand([tmp_path / "empty"])


def test_switching_keeps_the_latent_and_a_broken_checkpoint_is_a_message(ckpts, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    studio = studio_for([ckpts["stylenat"], bad, ckpts["hit"]], tmp_path)
    assert studio.first_loadable() == (0, [])
    spec = LatentSpec(seed=7, psi=0.5, mix_seed=1, mix_layers="0", strengths=(1.0,))
    with pytest.raises(NatGanError, match="broken.pt"):
        studio.model(1)
    kept, notes = studio.switch(spec, 2)
    assert kept.seed == 7 and kept.psi == 0.5 and not kept.mixing and kept.strengths == ()
    assert any("n_latent" in n for n in notes) and any("SeFa" in n for n in notes)
    assert studio.render(2, kept).image.shape == (16, 16, 3)
    # A/B: the same latent on another checkpoint, A's directions left out
    b = studio.render_b(2, spec)
    assert any("A's own" in n for n in b.notes)
    # the first loadable checkpoint is chosen when the first is broken
    assert studio_for([bad, ckpts["hit"]], tmp_path).first_loadable()[0] == 1


def test_attention_overlay_follows_level_head_and_pixel(ckpts, tmp_path):
    studio = studio_for([ckpts["stylenat"], ckpts["stylegan2"]], tmp_path)
    frame = studio.render(0, LatentSpec(seed=3, mix_seed=4, mix_layers="1"))
    mean = studio.attention(frame)
    assert mean.image.shape == frame.image.shape and mean.level == 16 and 16 in mean.levels
    assert not np.array_equal(mean.image, frame.image)
    corner = studio.attention(frame, where=fraction((0, 0), 16))
    centre = studio.attention(frame, where=fraction((10, 12), 16))
    assert not np.array_equal(corner.image, centre.image) and "marked pixel" in corner.caption
    other_head = studio.attention(frame, head=1)
    assert not np.array_equal(other_head.image, mean.image)
    with pytest.raises(NatGanError, match="no attention"):
        studio.attention(studio.render(1, LatentSpec(seed=3)))


def test_projection_streams_progress_and_continues_from_the_latent(ckpts, tmp_path, capsys):
    studio = studio_for([ckpts["stylegan2"]], tmp_path)
    target_img = studio.render(0, LatentSpec(seed=11)).image
    Image.fromarray(target_img).resize((20, 24)).save(tmp_path / "photo.png")
    target = studio.load_target(tmp_path / "photo.png", 0)
    updates = list(studio.project(0, target, steps=4))
    assert [u.step for u in updates] == [1, 2, 3, 4, 4] and updates[-1].latents is not None
    latents = updates[-1].latents
    frame = studio.render(0, LatentSpec(projected=latents, noise_mode="const"))
    assert np.array_equal(frame.image, updates[-1].image)  # the projected image, as `project` wrote it
    assert latents.noise  # StyleGAN2's optimised noise maps travel with the latent
    edited = studio.render(0, LatentSpec(projected=latents, strengths=(3.0,)))
    capture = studio.capture(edited)
    assert np.array_equal(run_capture(capture, capture.latents.parent, capsys), edited.image)
    # closing the stream early stops the worker
    stream = studio.project(0, target, steps=50)
    next(stream)
    stream.close()
    assert studio.lock.acquire(timeout=30)
    studio.lock.release()


def test_uploads_must_be_images_under_the_cap(ckpts, tmp_path, monkeypatch):
    from natgan.studio import session

    studio = studio_for([ckpts["stylegan2"]], tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt: not a readable image") as info:
        studio.load_target(tmp_path / "notes.txt", 0)
    assert str(tmp_path) not in str(info.value)  # the server's temp paths are not shown
    Image.new("RGB", (32, 32)).save(tmp_path / "big.png")
    monkeypatch.setattr(session, "MAX_UPLOAD_BYTES", 10)
    with pytest.raises(DataError, match="upload limit"):
        studio.load_target(tmp_path / "big.png", 0)
    with pytest.raises(ConfigError, match="steps"):
        next(studio.project(0, torch.zeros(1, 3, 16, 16), steps=0))


def test_one_generation_at_a_time(ckpts, tmp_path):
    import threading

    studio = studio_for([ckpts["stylenat"]], tmp_path)
    studio.model(0)
    active, most = [0], [0]
    G = studio.model(0).G
    real = G.synthesis

    def counting(w):
        active[0] += 1
        most[0] = max(most[0], active[0])
        try:
            return real(w)
        finally:
            active[0] -= 1

    G.synthesis = counting
    threads = [threading.Thread(target=studio.render, args=(0, LatentSpec(seed=s + 0.5))) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1


def test_studio_without_the_extra_is_one_line(monkeypatch, capsys, ckpts):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if `nat-gan[studio]` were not installed
    code, _, err = run_cli(["studio", str(ckpts["stylenat"])], capsys)
    assert code == 2 and 'pip install "nat-gan[studio]"' in err and len(err.strip().splitlines()) == 1


def test_studio_cli_refuses_bad_arguments_before_serving(capsys, tmp_path, ckpts, monkeypatch):
    from natgan.studio import server

    monkeypatch.setattr(server, "require_gradio", lambda: None)  # the checks below come before any serving
    code, _, err = run_cli(["studio", str(tmp_path / "nothing.pt")], capsys)
    assert code == 2 and "no such checkpoint" in err
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"junk")
    code, _, err = run_cli(["studio", str(bad), "--port", "0"], capsys)
    assert code == 1 and "broken.pt" in err and "Traceback" not in err
    code, _, err = run_cli(["studio", str(ckpts["hit"]), "--port", "70000"], capsys)
    assert code == 2 and "--port 70000" in err


def test_fraction_maps_clicks_into_the_unit_square():
    assert fraction((0, 0), 16) == (0.5 / 16, 0.5 / 16)
    fy, fx = fraction((15, 15), 16)
    assert fy < 1 and fx < 1
    assert fraction((99, -4), 16) == (0.0, 1 - 1e-9)
    with pytest.raises(ConfigError):
        fraction((float("nan"), 0), 16)


def test_seed_only_specs_name_seeds(ckpts):
    assert LatentSpec(seed=3).seed_only and not LatentSpec(seed=3.5).seed_only
    assert not replace(LatentSpec(seed=3), mix_seed=1, mix_layers="0").seed_only
    assert replace(LatentSpec(seed=3), mix_seed=1, mix_layers="").seed_only  # no layers chosen: no mixing
    assert not LatentSpec(seed=3, strengths=(0.0, 1.0)).seed_only


def test_cross_attention_shows_the_latent_a_pixel_attends_to(ckpts, tmp_path):
    studio = studio_for([ckpts["hit"]], tmp_path)
    frame = studio.render(0, LatentSpec(seed=5))
    captions = []
    for level in studio.attention(frame).levels:
        view = studio.attention(frame, level=level)
        for block in range(view.blocks):
            for where in (None, fraction((3, 9), 16)):
                shown = studio.attention(frame, level=level, block=block, where=where)
                assert shown.image.shape == frame.image.shape
                captions.append(shown.caption)
    assert any("most-attended latent" in c for c in captions)           # HiT's image -> latent attention
    assert any("the marked pixel's strongest" in c for c in captions)
    assert any("mean query" in c for c in captions)                      # and its self-attention


def test_server_policy_helpers():
    import socket

    from natgan.studio.server import check_port, free_port, is_local

    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1") and is_local("127.0.0.2")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.4") and not is_local("node12")
    port = free_port()
    assert check_port("127.0.0.1", 0) > 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ConfigError, match=f"--port {port}: cannot listen"):
            check_port("127.0.0.1", port)


# ------------------------------------------------------------------------------------- class-conditional

@pytest.mark.parametrize("family", sorted(REDUCED))
def test_conditional_captures_name_the_class_and_write_the_png_shown(family, conditional, tmp_path, capsys):
    """Every kind of latent in two classes: the command carries --class (the name, quoted by the shell line)
    and writes the PNG shown; the class changes every image."""
    studio = studio_for([conditional[family]], tmp_path)
    assert studio.model(0).classes == CLASSES and studio.model(0).info()["classes"] == 3
    for key, spec in SPECS.items():
        if key == "mixing" and family == "hit":
            continue
        images = []
        for label in (0, 2):
            frame = studio.render(0, replace(spec, label=label))
            capture = studio.capture(frame)
            argv = shlex.split(capture.command)
            assert argv[argv.index("--class") + 1] == CLASSES[label], capture.command
            assert np.array_equal(run_capture(capture, capture.latents.parent, capsys), frame.image), (key, label)
            images.append(frame.image)
        assert not np.array_equal(*images), key


def test_conditional_truncation_moves_toward_the_class_centre(conditional, tmp_path):
    """psi 0 puts every seed of a class on that class's own mean w (what `sample --trunc --class` does)."""
    from natgan.sampling import compute_w_avg

    studio = studio_for([conditional["stylegan2"]], tmp_path)
    cat = [studio.render(0, LatentSpec(seed=s, psi=0.0, label=0)) for s in (1, 2.5)]
    dog = studio.render(0, LatentSpec(seed=1, psi=0.0, label=1))
    assert np.array_equal(cat[0].image, cat[1].image) and not np.array_equal(cat[0].image, dog.image)
    G = studio.model(0).G
    assert torch.allclose(cat[1].latents.w[0], compute_w_avg(G, c=0).expand_as(cat[1].latents.w[0]))
    assert torch.equal(studio.model(0).centre(0.5, 1), compute_w_avg(G, c=1))


def test_class_errors_are_one_line(conditional, ckpts, tmp_path):
    studio = studio_for([conditional["stylenat"], ckpts["stylenat"]], tmp_path)
    for index, spec, message in ((0, LatentSpec(seed=1), r"class-conditional \(3 classes\): choose a class"),
                                 (0, LatentSpec(seed=1, label=3), "class 3: .* has 3 classes"),
                                 (0, LatentSpec(seed=1, label=1.5), "class 1.5"),
                                 (1, LatentSpec(seed=1, label=0), "unconditional")):
        with pytest.raises(ConfigError, match=message) as info:
            studio.render(index, spec)
        assert "\n" not in str(info.value)


def test_switching_and_ab_carry_the_class_by_name(conditional, ckpts, tmp_path):
    """The class stays by name across checkpoints (another checkpoint may order its classes otherwise), is
    left out on an unconditional one, and starts at class 0 coming from one."""
    from natgan import checkpoint as ckpt_io

    reordered = tmp_path / "reordered.pt"
    ckpt = ckpt_io.load(conditional["stylenat"])
    ckpt["extra"]["classes"] = ["snow leopard", "cat", "lynx"]
    ckpt_io.save(ckpt, reordered)
    studio = studio_for([conditional["stylenat"], reordered, ckpts["stylenat"]], tmp_path)
    spec = LatentSpec(seed=4, label=2)  # snow leopard
    kept, notes = studio.switch(spec, 1, source=0)
    assert kept.label == 0 and notes == []
    kept, notes = studio.switch(LatentSpec(seed=4, label=1), 1, source=0)  # dog: not in the reordered one
    assert kept.label == 1 and any("no class dog" in n and "class cat shown" in n for n in notes)
    kept, notes = studio.switch(spec, 2, source=0)
    assert kept.label is None and any("snow leopard left out" in n for n in notes)
    assert studio.render(2, kept).image.shape == (16, 16, 3)
    kept, notes = studio.switch(LatentSpec(seed=4), 0, source=2)
    assert kept.label == 0 and any("class-conditional" in n for n in notes)
    # A/B: B renders A's latent in the class of the same name (index 0 there; the weights are A's)
    b = studio.render_b(1, spec, source=0)
    assert b.spec.label == 0 and np.array_equal(b.image, studio.render(0, LatentSpec(seed=4, label=0)).image)
    assert not np.array_equal(b.image, studio.render(0, spec).image)
    assert studio.render_b(2, spec, source=0).spec.label is None


def test_conditional_projection_attention_and_directions(conditional, tmp_path, capsys):
    studio = studio_for([conditional["stylenat"]], tmp_path)
    target_img = studio.render(0, LatentSpec(seed=11, label=1)).image
    Image.fromarray(target_img).save(tmp_path / "photo.png")
    target = studio.load_target(tmp_path / "photo.png", 0)
    updates = list(studio.project(0, target, steps=3, label=1))
    latents = updates[-1].latents
    frame = studio.render(0, LatentSpec(projected=latents, label=1, strengths=(2.0,)))
    assert any("finished w" in n for n in frame.notes)
    capture = studio.capture(frame)
    assert "--class dog" in capture.command
    assert np.array_equal(run_capture(capture, capture.latents.parent, capsys), frame.image)
    view = studio.attention(studio.render(0, LatentSpec(seed=3, label=2)))
    assert view.image.shape == (16, 16, 3)
    with pytest.raises(ConfigError, match="choose a class"):
        studio.project(0, target, steps=2).__next__()


def test_class_argument_reads_back_as_the_same_class():
    from natgan.sampling.classes import class_argument, parse_class

    names = ["cat", "3", "snow leopard", "a,b", "all", " x", "0"]
    for k, expected in enumerate(["cat", "3", "snow leopard", None, "4", "5", "0"]):
        if expected is None:  # its name has a comma and "3" names class 1: nothing selects it
            with pytest.raises(ConfigError, match="cannot select"):
                class_argument(k, names)
            continue
        assert class_argument(k, names) == expected and parse_class(expected, names) == [k]


def test_the_class_control_reads_indices_and_typed_names():
    from natgan.studio.spec import class_of_control

    assert class_of_control(2, CLASSES) == 2 and class_of_control(None, CLASSES) is None
    assert class_of_control("snow leopard", CLASSES) == 2 and class_of_control("1", CLASSES) == 1
    assert class_of_control(2, []) is None and class_of_control("cat", []) is None  # unconditional: no class
    for typed, message in (("lynx", "not a class of this checkpoint"), ("all", "choose one class, not 3")):
        with pytest.raises(ConfigError, match=message):
            class_of_control(typed, CLASSES)


def test_an_imported_conditional_checkpoint_truncates_toward_its_stored_centre(tmp_path, capsys):
    """An imported stylegan2-ada snapshot (c_dim > 0) keeps the official centre (one over all classes), as
    `sample --trunc --class` does: psi 0 is that centre in every class, and captures still reproduce."""
    from natgan.sampling import load_generator

    snapshot = Path(__file__).parent / "fixtures/official/stylegan2-ada-cond/network-snapshot-000012.pkl"
    ckpt = tmp_path / "imported.pt"
    code, _, err = run_cli(["import", str(snapshot), "--from", "auto", "--out", str(ckpt)], capsys)
    assert code == 0, err
    studio = studio_for([ckpt], tmp_path)
    names = studio.model(0).classes
    stored = load_generator(ckpt).truncation_centre()
    assert len(names) > 1 and stored is not None
    centre = [studio.render(0, LatentSpec(seed=1.5, psi=0.0, label=k)) for k in (0, 1)]
    for frame in centre:
        assert torch.allclose(frame.latents.w[0], stored.expand_as(frame.latents.w[0]))
    for spec in (LatentSpec(seed=3, psi=0.7, label=1), LatentSpec(seed=3.5, psi=0.7, label=1)):
        frame = studio.render(0, spec)
        capture = studio.capture(frame)
        assert "--class" in capture.command
        assert np.array_equal(run_capture(capture, capture.latents.parent, capsys), frame.image)


def test_studio_class_option_chooses_the_first_class(conditional, ckpts, tmp_path, capsys, monkeypatch):
    """`nat-gan studio CKPT --class NAME` starts the page in that class; a bad --class is one line before serving."""
    from natgan.studio import server

    studio = studio_for([conditional["stylenat"]], tmp_path)
    assert studio.class_named(0, "snow leopard") == 2 and studio.class_named(0, "1") == 1
    monkeypatch.setattr(server, "require_gradio", lambda: None)  # the checks below come before any serving
    for ckpt, option, message in ((conditional["stylenat"], "lynx", "'lynx': not a class of this checkpoint"),
                                  (conditional["stylenat"], "all", "one class at a time, not 3"),
                                  (ckpts["hit"], "1", "hit.pt: --class 1: the checkpoint is unconditional")):
        code, _, err = run_cli(["studio", str(ckpt), "--class", option, "--port", "0"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    gradio = pytest.importorskip("gradio")
    from natgan.studio.app import build_page

    def class_control(page):
        return next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "class")

    studio.first_class = 2
    control = class_control(build_page(studio))
    assert isinstance(control, gradio.Dropdown) and control.value == 2 and control.visible
    assert not class_control(build_page(studio_for([ckpts["hit"]], tmp_path / "plain"))).visible
