"""Rules every command follows: one overwrite rule (--overwrite, old names as hidden aliases) and one exit-code
rule (2 = bad usage or configuration, 1 = failure), each as a table over the commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import tiny_model  # noqa: F401  (registers "_tiny_test")
from shared_fixtures import OFFICIAL, requires_official
from test_sample import run_cli, tiny_checkpoint
from test_train import digits, tiny_recipe  # noqa: F401 - fixture


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "tiny.pt"
    tiny_checkpoint(path, resolution=8)
    return path


@pytest.fixture(autouse=True)
def _wide(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "400")  # one error line, unwrapped
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NATGAN_OFFLINE", "1")


def overwrite_cases(tmp_path: Path, ckpt: Path, digits: str) -> dict[str, tuple[list[str], Path]]:
    """command -> (arguments, the output folder or file it writes)."""
    from test_latent_cli import family_checkpoint

    target = tmp_path / "photo.png"
    Image.new("RGB", (16, 16), (120, 30, 200)).save(target)
    out = tmp_path / "out"
    c = str(ckpt)
    sg2 = tmp_path / "sg2.pt"
    family_checkpoint("stylegan2", sg2)
    return {
        "sample png": (["sample", "--ckpt", c, "--seeds", "0-2", "--outdir", str(out / "s")], out / "s"),
        "sample grid": (["sample", "--ckpt", c, "--grid", "1x2", "--outdir", str(out / "g")], out / "g"),
        "sample npz": (["sample", "--ckpt", c, "--seeds", "0-2", "--format", "npz", "--outdir", str(out / "n")],
                       out / "n"),
        "sample interpolate": (["sample", "--ckpt", c, "--interpolate", "1,2", "--frames", "3", "--outdir",
                                str(out / "i")], out / "i"),
        "directions": (["directions", "--ckpt", str(sg2), "--out", str(out / "d.npz")], out / "d.npz"),
        "project": (["project", "--ckpt", str(sg2), "--target", str(target), "--outdir", str(out / "p"), "--steps", "1",
                     "--random-lpips", "--w-avg-samples", "8", "-q"], out / "p"),
        "visualize": (["visualize", "--model", "hit-b", "--resolution", "16", "--levels", "8", "--outdir",
                       str(out / "v")], out / "v"),
        "prepare": (["prepare", "digits", "--out", str(out / "x.lmdb"), "--sizes", "8", "--max-images", "12",
                     "--no-progress"], out / "x.lmdb"),
    }


def test_one_overwrite_rule_for_every_command(tmp_path, ckpt, digits, capsys):
    """Run twice: the second run is refused (exit 2, one line naming an existing file and --overwrite) and
    leaves every existing file as it was; with --overwrite it runs."""
    for name, (args, output) in overwrite_cases(tmp_path, ckpt, digits).items():
        code, _, err = run_cli(args, capsys)
        assert code == 0, (name, err)
        before = snapshot(output.parent)
        again = args + (["--sizes", "16"] if name == "prepare" else [])  # the same build again is "up to date"
        code, _, err = run_cli(again, capsys)
        assert code == 2, (name, code, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
        assert "exists" in err and "--overwrite" in err and str(output) in err, (name, err)
        assert snapshot(output.parent) == before, name
        code, _, err = run_cli(again + ["--overwrite"], capsys)
        assert code == 0, (name, err)


def test_train_refuses_a_used_outdir_and_overwrite_moves_it_aside(tmp_path, digits, capsys):
    recipe = str(tiny_recipe(tmp_path, digits, iterations=4, checkpoint_every=4, sample_every=4))
    base = ["train", "--recipe", recipe, "--outdir", str(tmp_path / "run"), "--no-progress"]
    assert run_cli(base, capsys)[0] == 0
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "already holds checkpoints" in err and "--overwrite" in err
    for flag in ("--overwrite", "--start-over"):  # --start-over: the old name, a hidden alias
        code, _, err = run_cli(base + [flag], capsys)
        assert code == 0, err
    assert len(list((tmp_path / "run").glob("previous-*"))) >= 1
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert "--overwrite" in out and "--start-over" not in out
    code, out, _ = run_cli(["prepare", "folder", "--help"], capsys)
    assert "--overwrite" in out and "--force" not in out


def exit_cases(tmp_path: Path, ckpt: Path, digits: str) -> list[tuple[str, list[str], int, str]]:
    png = tmp_path / "some.png"
    Image.new("RGB", (8, 8)).save(png)
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"keep")
    return [
        # bad usage or configuration: 2
        ("unknown option", ["sample", "--ckpt", str(ckpt), "--nope"], 2, "No such option"),
        ("bad value", ["sample", "--ckpt", str(ckpt), "--format", "tiff"], 2, "--format"),
        ("prepare other sizes", ["prepare", "digits", "--out", digits, "--sizes", "16"], 2, "--overwrite"),
        ("import over --out", ["import", str(png), "--out", str(existing)], 2, "--overwrite"),
        ("visualize convolutional", ["visualize", "--model", "stylegan2", "--resolution", "8", "--outdir",
                                     str(tmp_path / "v")], 2, "no attention modules"),
        ("fid flags contradict", ["fid", "--ckpt", str(ckpt), "--no-record", "--record-in-checkpoint"], 2,
         "contradict"),
        ("cache section", ["cache", "clear", "--section", "all"], 2, "cache section"),
        # failures: 1
        ("missing checkpoint", ["sample", "--ckpt", str(tmp_path / "missing.pt")], 1, "not found"),
        ("not a checkpoint", ["import", str(png), "--out", str(tmp_path / "new.pt")], 1, "not a checkpoint"),
        ("missing weights", ["fid", digits, digits, "--weights", str(tmp_path)], 1, "Inception weights"),
    ]


def test_exit_codes(tmp_path, ckpt, digits, capsys):
    for name, args, code, names in exit_cases(tmp_path, ckpt, digits):
        got, _, err = run_cli(args, capsys)
        assert got == code, (name, got, err)
        assert err.startswith("error: ") and names in err and "Traceback" not in err, (name, err)


@requires_official
def test_import_with_the_wrong_from_is_a_usage_error(tmp_path, capsys):
    code, _, err = run_cli(["import", str(OFFICIAL / "styleswin_tiny.pt"), "--from", "stylenat", "--out",
                            str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "use --from styleswin" in err
    code, _, err = run_cli(["import", str(OFFICIAL / "stylenat_hydra_tiny.pt"), "--from", "styleswin", "--out",
                            str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "use --from stylenat" in err


def test_ctrl_c_prints_a_line(tmp_path, ckpt, capsys, monkeypatch):
    """Ctrl-C in fid (or any command) exits 130 with one line saying so, not silently."""
    import natgan.sampling

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(natgan.sampling, "load_generator", interrupted)
    code, _, err = run_cli(["fid", "--ckpt", str(ckpt), "--data", str(tmp_path)], capsys)
    assert code == 130 and err.startswith("error: interrupted") and len(err.strip().splitlines()) == 1, err


def all_commands():
    import typer

    from natgan.cli import app

    def walk(command, path):
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), [])


def test_help_has_no_type_tags_and_one_seed_bound(capsys):
    """--help names values the conventional way (PATH, INTEGER), shows nothing after a flag, and every --seed
    has the same bound; visualize's --device defaults to auto like every other command."""
    from natgan.sampling.seeds import MAX_SEED

    seeds = {}
    for path, command in all_commands():
        code, out, _ = run_cli([*path, "--help"], capsys)
        assert code == 0, path
        for tag in ("<bool>", "<str>", "<int", "<float", "<path>", "<list["):
            assert tag not in out, (path, tag)
        for param in command.params:
            if param.name == "seed":
                seeds[" ".join(path)] = (param.min, param.max)
            if param.name == "device":
                assert param.default == "auto", path
    assert set(seeds) >= {"fid", "visualize", "project"} and set(seeds.values()) == {(0, MAX_SEED)}
