"""Adversarial pass (issue 18): malformed checkpoints, recipes, folders, zips and LMDBs fed to every command.

Each case asserts what a hostile or careless user must get: the documented exit code, one ``error:``
line naming the input, no Python traceback, and no pre-existing file changed. The malformed inputs are
generated here, so the module also guards against regressions in any loader.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_model  # noqa: F401
from natgan import checkpoint
from natgan.cli import main
from test_reliability import MUTATIONS, flip_byte_in_entry, tiny_checkpoint


def png(seed: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out[str(p)] = p.read_bytes()
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code or 0, captured.err


def assert_refused(root: Path, args: list, capsys, *, code: int, names: str | None = None,
                   lines: int | None = 1) -> str:
    before = snapshot(root)
    got, err = run_cli(args, capsys)
    assert got == code, f"exit {got}, expected {code}: {err}"
    assert "Traceback" not in err and err.startswith("error: "), err
    if lines is not None:
        assert len(err.strip().splitlines()) == lines, err
    if names is not None:
        assert names in " ".join(err.split()), err
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before, "a pre-existing file changed"
    return err


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NATGAN_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "400")  # keep rich from wrapping the one error line


@pytest.fixture
def tiny_extractor(monkeypatch):
    """A small stand-in for Inception, so dataset FIDs reach the data (no weights on this machine)."""
    from natgan.metrics import FeatureExtractor, runner

    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()).eval()
    monkeypatch.setattr(runner, "build_inception",
                        lambda mode, *, device="cpu", **_:  FeatureExtractor(net, mode=mode, device=device))


# ------------------------------------------------------------------ checkpoints x every command
def malformed_checkpoints(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (mutate, _) in MUTATIONS.items():
        ck = tiny_checkpoint()
        mutate(ck)
        path = root / (name.replace(" ", "_").replace(".", "_") + ".pt")
        torch.save(ck, path)
        files[name] = path
    good = checkpoint.save(tiny_checkpoint(), root / "flipped.pt")
    flip_byte_in_entry(good, "/data/1")
    files["flipped byte"] = good
    (root / "random.pt").write_bytes(np.random.default_rng(0).integers(0, 128, 3000, dtype=np.uint8).tobytes())
    files["random bytes"] = root / "random.pt"
    whole = checkpoint.save(tiny_checkpoint(), root / "whole.pt").read_bytes()
    (root / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    files["truncated"] = root / "truncated.pt"
    (root / "empty.pt").write_bytes(b"")
    files["empty"] = root / "empty.pt"
    nan = tiny_checkpoint()
    nan["weights"]["G_ema"] = {k: torch.full_like(v, float("nan")) for k, v in nan["weights"]["G_ema"].items()}
    files["nan weights"] = checkpoint.save(nan, root / "nan.pt")
    return files


CKPT_CASES = ["negative step", "absurd step", "weights.G a list", "wrong shape", "missing tensor", "absurd config",
              "optim a list", "rng ranks garbage", "metrics a dict", "pl_mean a string", "model not a table",
              "unknown model", "flipped byte", "random bytes", "truncated", "empty"]


@pytest.fixture(scope="module")
def bad_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    files = malformed_checkpoints(root)
    ref = root / "ref"
    ref.mkdir()
    for i in range(4):
        (ref / f"{i}.png").write_bytes(png(i))
    return files, ref


COMMANDS = {
    "sample": lambda ck, out, ref: ["sample", "--ckpt", ck, "--seeds", "0-1", "--outdir", out],
    "fid": lambda ck, out, ref: ["fid", "--ckpt", ck, "--data", ref, "--num", "2", "--no-record"],
    "visualize": lambda ck, out, ref: ["visualize", "--ckpt", ck, "--outdir", out],
    "train": lambda ck, out, ref: ["train", "--resume", ck, "--outdir", out],
}


@pytest.mark.parametrize("case", CKPT_CASES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_malformed_checkpoints_in_every_command(tmp_path, capsys, bad_ckpts, case, command):
    files, ref = bad_ckpts
    path = files[case]
    assert_refused(path.parent, COMMANDS[command](path, tmp_path / "out", ref), capsys, code=1, names=str(path))
    assert not (tmp_path / "out" / "latest.pt").exists()


@pytest.mark.parametrize("command", ["sample", "fid"])
def test_non_finite_generator_weights_in_sample_and_fid(tmp_path, capsys, bad_ckpts, command):
    files, ref = bad_ckpts
    assert_refused(files["nan weights"].parent, COMMANDS[command](files["nan weights"], tmp_path / "o", ref), capsys,
                   code=1, names="non-finite")
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True


@pytest.mark.parametrize("case", ["random bytes", "truncated", "weights.G a list"])
def test_malformed_files_given_to_import(tmp_path, capsys, bad_ckpts, case):
    files, _ = bad_ckpts
    assert_refused(files[case].parent, ["import", files[case], "--from", "stylenat", "--out", tmp_path / "o.pt"],
                   capsys, code=1, names=str(files[case]))
    assert not (tmp_path / "o.pt").exists()


# ------------------------------------------------------------------ recipes
RECIPES = {
    "nan": ('[model]\nname = "_tiny_test"\n[train]\nema_beta = nan\n', "train.ema_beta"),
    "inf lr": ('[model]\nname = "_tiny_test"\n[train]\nd_lr = inf\n', "train.d_lr"),
    "unknown key": ('[model]\nname = "_tiny_test"\n[train]\nbatchsize = 4\n', "train.batchsize"),
    "wrong type": ('[model]\nname = "_tiny_test"\n[train]\nbatch = "four"\n', "train.batch"),
    "unknown section": ('[model]\nname = "_tiny_test"\n[trian]\n', "[trian]"),
    "no model": ('[train]\nbatch = 4\n', "model.name"),
    "unknown model": ('[model]\nname = "nope"\n', "model.name"),
    "not toml": ("[model\nname=", "not valid TOML"),
    "binary": (b"\xff\xfe\x00garbage", "not a text file"),
    "decay after end": ('[model]\nname = "_tiny_test"\n[train]\niterations = 10\nlr_decay_start = 20\n',
                        "train.lr_decay_start"),
    "negative": ('[model]\nname = "_tiny_test"\n[train]\nbatch = -1\n', "train.batch"),
}


@pytest.mark.parametrize("case", list(RECIPES))
def test_malformed_recipes(tmp_path, capsys, case):
    text, names = RECIPES[case]
    path = tmp_path / "r.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_refused(tmp_path, ["train", "--recipe", path, "--outdir", tmp_path / "run", "--dry-run"], capsys,
                   code=2, names=names)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, names", [("train.ema_beta=nan", "train.ema_beta"),
                                             ("train.beta1=nan", "train.beta1"), ("train.nope=1", "train.nope"),
                                             ("nosection", "KEY=VALUE"), ("train.seed=-1", "train.seed")])
def test_malformed_overrides(tmp_path, capsys, override, names):
    path = tmp_path / "r.toml"
    path.write_text('[model]\nname = "_tiny_test"\n')
    assert_refused(tmp_path, ["train", "--recipe", path, "--outdir", tmp_path / "run", "--dry-run", "--set", override],
                   capsys, code=2, names=names)


# ------------------------------------------------------------------ folders and zips
def folder_with(root: Path, bad: str) -> tuple[Path, str]:
    root.mkdir(parents=True)
    for i in range(3):
        (root / f"{i}.png").write_bytes(png(i))
    if bad == "dangling symlink":
        os.symlink("missing.png", root / "x.png")
        return root, str(root / "x.png")
    if bad == "symlink loop":
        os.symlink("y.png", root / "x.png")
        os.symlink("x.png", root / "y.png")
        return root, str(root / "x.png")
    if bad == "non-utf8 name":
        with open(os.path.join(os.fsencode(root), b"\xff.png"), "wb") as fh:
            fh.write(png(7))
        return root, "\\xff.png"
    if bad == "broken image":
        (root / "x.png").write_bytes(png(5)[:40])
        return root, str(root / "x.png")
    if bad == "fifo":
        os.mkfifo(root / "x.png")
        return root, str(root / "x.png")
    raise ValueError(bad)


def zip_with(path: Path, bad: str) -> tuple[Path, str]:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", png(i))
        zf.writestr("x.png", png(9))
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    if bad == "encrypted member":
        data[central + 8] |= 1
    elif bad == "unsupported method":
        data[central + 10:central + 12] = (9).to_bytes(2, "little")
    elif bad == "zip bomb":
        data[central + 24:central + 28] = (3 << 30).to_bytes(4, "little")  # claims 3 GiB uncompressed
    path.write_bytes(bytes(data))
    return path, f"{path}:x.png"


SOURCES = [("folder", b) for b in ("dangling symlink", "symlink loop", "non-utf8 name", "broken image", "fifo")] + \
          [("zip", b) for b in ("encrypted member", "unsupported method", "zip bomb")]


def make_source(tmp_path: Path, kind: str, bad: str) -> tuple[Path, str]:
    return folder_with(tmp_path / "src", bad) if kind == "folder" else zip_with(tmp_path / "src.zip", bad)


@pytest.mark.parametrize("kind, bad", SOURCES)
def test_bad_files_in_prepare_are_named_or_skipped(tmp_path, capsys, kind, bad):
    src, culprit = make_source(tmp_path, kind, bad)
    out = tmp_path / "o.lmdb"
    args = ["prepare", "folder", src, "--out", out, "--sizes", "8", "--workers", "0", "--no-progress"]
    assert_refused(tmp_path, args, capsys, code=1, names=culprit)
    assert not out.exists()
    code, err = run_cli(args + ["--skip-bad", "--json"], capsys)
    assert code == 0 and "Traceback" not in err
    from natgan.data import open_dataset

    assert len(open_dataset(out, 8)) == 3


@pytest.mark.parametrize("kind, bad", [("folder", "dangling symlink"), ("zip", "encrypted member"),
                                       ("folder", "non-utf8 name")])
def test_bad_files_in_fid_datasets_are_named(tmp_path, capsys, tiny_extractor, kind, bad):
    src, culprit = make_source(tmp_path, kind, bad)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(3):
        (other / f"{i}.png").write_bytes(png(10 + i))
    assert_refused(tmp_path, ["fid", src, other, "--workers", "0", "-q"], capsys, code=1, names=culprit)


# ------------------------------------------------------------------ LMDBs
@pytest.fixture(scope="module")
def good_lmdb(tmp_path_factory):
    from natgan.data import prepare_dataset

    root = tmp_path_factory.mktemp("lmdb")
    src = root / "imgs"
    src.mkdir()
    for i in range(6):
        (src / f"{i}.png").write_bytes(png(i))
    out = root / "good.lmdb"
    prepare_dataset(src, out, sizes=8, encoding="png", workers=0, progress=False)
    return out


def damaged_lmdb(good: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    bad = tmp_path / f"{how.replace(' ', '_')}.lmdb"
    shutil.copytree(good, bad)
    data = bytearray((bad / "data.mdb").read_bytes())
    if how == "truncated":
        data = data[: len(data) // 3]
    elif how == "garbage":
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "corrupted page":
        page = 4096
        for offset in range(2 * page, len(data), page):  # every page after the two meta pages
            data[offset:offset + 64] = b"\xa5" * 64
    (bad / "data.mdb").write_bytes(bytes(data))
    return bad


LMDB_DAMAGE = ["truncated", "garbage", "corrupted page"]


@pytest.mark.parametrize("how", LMDB_DAMAGE)
def test_damaged_lmdb_in_prepare_check(tmp_path, capsys, good_lmdb, how):
    bad = damaged_lmdb(good_lmdb, tmp_path, how)
    err = assert_refused(tmp_path, ["prepare", "check", bad], capsys, code=1, names=str(bad), lines=None)
    assert err.count("error:") == 1


@pytest.mark.parametrize("how", LMDB_DAMAGE)
def test_damaged_lmdb_in_fid(tmp_path, capsys, tiny_extractor, good_lmdb, how):
    bad = damaged_lmdb(good_lmdb, tmp_path, how)
    assert_refused(tmp_path, ["fid", bad, good_lmdb, "--workers", "0", "-q"], capsys, code=1, names=str(bad))


# ------------------------------------------------------------------ options
@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory):
    return checkpoint.save(tiny_checkpoint(), tmp_path_factory.mktemp("good") / "good.pt")


def test_option_errors_are_one_line(tmp_path, capsys, good_ckpt):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    cases = [
        (["sample", "--ckpt", good_ckpt, "--seeds", "", "--outdir", tmp_path / "o"], "empty seed list"),
        (["sample", "--ckpt", good_ckpt, "--grid", "99999x99999"], "at most 4096"),
        (["sample", "--ckpt", good_ckpt, "--seeds", "0-999999999999,1000000000000-1999999999999"],
         "more than 1,000,000,000,000 seeds"),
        (["sample", "--ckpt", good_ckpt, "--seeds", "0-1", "--outdir", afile], "exists and is not a directory"),
        (["visualize", "--ckpt", good_ckpt, "--outdir", afile], "exists and is not a directory"),
    ]
    for args, names in cases:
        assert_refused(tmp_path, args, capsys, code=2, names=names)
    assert afile.read_text() == "keep me"


def test_train_device_and_outdir_errors(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "_tiny_test"\n[train]\nbatch = 2\n')
    base = ["train", "--recipe", recipe, "--outdir", tmp_path / "run", "--dry-run"]
    assert_refused(tmp_path, base + ["--set", "train.device=garbage"], capsys, code=2, names="train.device")
    if not torch.cuda.is_available():
        assert_refused(tmp_path, base + ["--set", "train.device=cuda"], capsys, code=2,
                       names="CUDA is not available")
    assert_refused(tmp_path, base + ["--set", "train.seed=281474976710657"], capsys, code=2, names="train.seed")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_refused(tmp_path, ["train", "--recipe", recipe, "--outdir", afile], capsys, code=2,
                   names="exists and is not a directory")


def lmdb_with_broken_record(good: Path, tmp_path: Path, index: int = 2) -> tuple[Path, str]:
    import shutil

    import lmdb

    bad = tmp_path / "broken_record.lmdb"
    shutil.copytree(good, bad)
    key = f"8-{index:05d}"
    env = lmdb.open(str(bad), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(key.encode(), b"not an image")
    env.close()
    return bad, key


@pytest.mark.parametrize("command", ["train", "fid"])
def test_a_worker_process_error_names_the_record(tmp_path, capsys, tiny_extractor, good_lmdb, command):
    bad, key = lmdb_with_broken_record(good_lmdb, tmp_path)
    if command == "train":
        recipe = tmp_path / "r.toml"
        recipe.write_text('[model]\nname = "_tiny_test"\nresolution = 8\n[data]\nworkers = 1\nflip = false\n'
                          '[train]\nbatch = 6\niterations = 2\nlr_decay_start = 1\nseed = 0\n')
        args = ["train", "--recipe", recipe, "--data", bad, "--outdir", tmp_path / "run", "--no-progress"]
    else:
        args = ["fid", bad, good_lmdb, "--workers", "1", "-q"]
    before = snapshot(bad)
    code, err = run_cli(args, capsys)
    err_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(err_lines) == 1 and "Traceback" not in err, err
    assert key in err_lines[0] and "DataLoader worker" not in err_lines[0]
    assert snapshot(bad) == before


def test_fid_with_one_image_names_the_side_and_bench_bounds_batches(tmp_path, capsys, tiny_extractor):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "0.png").write_bytes(png(0))
    for i in range(3):
        (two / f"{i}.png").write_bytes(png(i + 1))
    assert_refused(tmp_path, ["fid", one, two, "--workers", "0", "-q"], capsys, code=1, names=f"A {one}")
    assert_refused(tmp_path, ["bench", "--models", "stylegan2", "--batch", "100000000"], capsys, code=2,
                   names="at most 65536")


def test_fid_num_is_bounded_before_any_work(tmp_path, capsys, good_ckpt):
    assert_refused(tmp_path, ["fid", "--ckpt", good_ckpt, "--data", tmp_path, "--num", str(10 ** 12)], capsys,
                   code=2, names="at most 2,000,000 images")
