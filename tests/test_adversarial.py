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


# ================================================================== issue 24 §4: the second adversarial pass
# Each family below is answered with one `error:` line, a non-zero exit, no traceback and no file changed.
# Cases that would allocate gigabytes on a naive implementation run in a subprocess under an address-space
# cap (RLIMIT_AS), so the refusal is shown to happen before anything large is allocated.

import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent


def run_capped(args: list, *, cap_gib: float = 6.0, env: dict | None = None, timeout: float = 300) -> tuple[int, str]:
    """The CLI in a fresh process whose address space is capped: a refusal must come before allocation."""
    cap = int(cap_gib * 2 ** 30)
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import tiny_model; "
            f"from natgan.cli import main; main(sys.argv[1:])")
    environ = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "400", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=environ,
                          timeout=timeout, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
    return proc.returncode, proc.stderr


def assert_one_line(code: int, err: str, *, expected: int = 1, names: str | None = None) -> None:
    assert code == expected, f"exit {code}, expected {expected}: {err[-2000:]}"
    assert "Traceback" not in err and "MemoryError" not in err, err[-2000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    if names is not None:
        assert names in lines[0], lines[0]


def in_big_stack(fn):
    """Run ``fn`` where deep recursion is possible (only to *build* hostile fixtures: pickling nests)."""
    out: list = []
    limit = sys.getrecursionlimit()

    def target():
        sys.setrecursionlimit(100_000)
        try:
            out.append(fn())
        finally:
            sys.setrecursionlimit(limit)

    size = threading.stack_size(512 << 20)
    try:
        t = threading.Thread(target=target)
        t.start()
        t.join()
    finally:
        threading.stack_size(size)
    return out[0] if out else None


def nested_list(depth: int) -> list:
    x: list = []
    for _ in range(depth):
        x = [x]
    return x


def deep_persistence_pickle(path: Path, depth: int) -> Path:
    """An NVlabs-style snapshot whose generator record nests ``depth`` child records (``_modules``)."""
    import pickle
    import types

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - only pickled by name
        return meta

    module = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Record:
        def __init__(self, child):
            self.child = child

        def __reduce__(self):
            modules = {"a": self.child} if self.child is not None else {}
            return (_reconstruct_persistent_obj, ({"type": "class", "version": 4, "module_src": "",
                                                   "class_name": "Generator",
                                                   "state": {"_modules": modules, "_parameters": {},
                                                             "_buffers": {}}},))

    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": module})
    try:
        def build():
            rec = None
            for _ in range(depth):
                rec = Record(rec)
            path.write_bytes(pickle.dumps({"G_ema": rec, "G": rec, "D": rec}, protocol=2))
        in_big_stack(build)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return path


def lmdb_with(good: Path, tmp_path: Path, name: str, key: bytes, value: bytes) -> Path:
    import shutil

    import lmdb

    bad = tmp_path / name
    shutil.copytree(good, bad)
    env = lmdb.open(str(bad), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()
    return bad


def meta_of(good: Path) -> dict:
    import json

    import lmdb

    env = lmdb.open(str(good), readonly=True, lock=False)
    try:
        return json.loads(env.begin().get(b"__natgan_meta__"))
    finally:
        env.close()


# ------------------------------------------------------------------ absurdly nested structures
def test_nested_recipe_and_overrides_are_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.toml"
    deep.write_text('[model]\nname = "_tiny_test"\n[train]\nbatch = ' + "[" * 30_000 + "]" * 30_000 + "\n")
    assert_refused(tmp_path, ["train", "--recipe", deep, "--outdir", tmp_path / "run", "--dry-run"], capsys,
                   code=2, names="nested more than 64 levels")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "_tiny_test"\n')
    value = "[" * 30_000 + "]" * 30_000
    assert_refused(tmp_path, ["train", "--recipe", recipe, "--outdir", tmp_path / "run", "--dry-run", "--set",
                              f"train.batch={value}"], capsys, code=2, names="--set train.batch")
    assert_refused(tmp_path, ["bench", "--model", "stylegan2", "--set", f"model.style_dim={value}"], capsys,
                   code=2, names="--set model.style_dim")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["extra", "recipe"])
def test_nested_checkpoint_structures_are_one_line(tmp_path, capsys, where):
    ck = tiny_checkpoint()
    if where == "extra":
        ck["extra"]["deep"] = nested_list(5_000)
    else:
        ck["recipe"]["train"]["args"] = nested_list(5_000)
    path = in_big_stack(lambda: checkpoint.save(ck, tmp_path / "deep.pt"))
    assert_refused(tmp_path, ["sample", "--ckpt", path, "--seeds", "0", "--outdir", tmp_path / "o", "-q"], capsys,
                   code=1, names=f"key '{where}.")
    assert_refused(tmp_path, ["train", "--resume", path, "--outdir", tmp_path / "run"], capsys, code=1,
                   names="nested more than 64 levels")
    assert not (tmp_path / "o").exists()


def test_nested_persistence_records_in_a_network_pickle(tmp_path, capsys):
    path = deep_persistence_pickle(tmp_path / "deep.pkl", 5_000)
    assert_refused(tmp_path, ["import", path, "--from", "stylegan2-ada", "--out", tmp_path / "o.pt"], capsys,
                   code=1, names="nested more than 64 levels")
    assert not (tmp_path / "o.pt").exists()


def test_nested_lmdb_metadata(tmp_path, capsys, good_lmdb):
    bad = lmdb_with(good_lmdb, tmp_path, "deep.lmdb", b"__natgan_meta__", b"[" * 100_000 + b"]" * 100_000)
    assert_refused(tmp_path, ["prepare", "check", bad], capsys, code=1, names="nested more than 64 levels")


# ------------------------------------------------------------------ malformed LMDB metadata and length
@pytest.mark.parametrize("key, value, names", [("sizes", "abc", "key 'sizes'"), ("count", [1], "key 'count'"),
                                               ("format_version", "x", "key 'format_version'")])
@pytest.mark.parametrize("command", ["check", "fid"])
def test_malformed_lmdb_metadata_fields(tmp_path, capsys, tiny_extractor, good_lmdb, key, value, names, command):
    import json

    meta = {**meta_of(good_lmdb), key: value}
    bad = lmdb_with(good_lmdb, tmp_path, "bad.lmdb", b"__natgan_meta__", json.dumps(meta).encode())
    args = ["prepare", "check", bad] if command == "check" else ["fid", bad, good_lmdb, "--workers", "0", "-q"]
    assert_refused(tmp_path, args, capsys, code=1, names=names)


def test_lmdb_length_record_beyond_its_records(tmp_path, capsys, good_lmdb):
    bad = lmdb_with(good_lmdb, tmp_path, "long.lmdb", b"length", b"1000000000000")
    code, err = run_capped(["prepare", "check", bad, "--workers", "0", "--no-progress"])
    assert_one_line(code, err, names="'length' record says 1,000,000,000,000 images")


# ------------------------------------------------------------------ declared sizes vs memory
def stride0(*shape: int) -> torch.Tensor:
    return torch.zeros(1).expand(*shape)


@pytest.fixture(scope="module")
def stride0_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stride0")
    big = tiny_checkpoint()
    width = 5_000_000  # a 1.9e9-parameter G in a few kB: every tensor is a stride-0 view
    big["model"]["config"]["width"] = width
    for key in ("G", "G_ema"):
        big["weights"][key] = {"map.weight": stride0(width, 8), "map.bias": stride0(width),
                               "out.weight": stride0(192, 2 * width), "out.bias": stride0(192)}
    big["weights"].pop("D")
    big["optim"] = {}
    files = {"big G": checkpoint.save(big, root / "big.pt")}
    huge_avg = tiny_checkpoint()
    huge_avg["extra"]["w_avg"] = stride0(10 ** 6, 10 ** 6)
    files["huge w_avg"] = checkpoint.save(huge_avg, root / "huge_avg.pt")
    torch.save({"g_ema": {"style.1.weight": stride0(200_000, 200_000), "style.1.bias": stride0(200_000)},
                "latent_avg": stride0(200_000)}, root / "rosinality.pt")
    files["rosinality"] = root / "rosinality.pt"
    return files


@pytest.mark.parametrize("command", ["sample", "directions", "import"])
def test_stride0_checkpoints_are_refused_before_allocation(tmp_path, stride0_files, command):
    big = stride0_files["big G"]
    args = {"sample": ["sample", "--ckpt", big, "--seeds", "0", "--outdir", tmp_path / "o", "-q"],
            "directions": ["directions", "--ckpt", big, "--out", tmp_path / "d.npz"],
            "import": ["import", stride0_files["rosinality"], "--from", "rosinality", "--out", tmp_path / "i.pt"]}
    code, err = run_capped(args[command])
    assert_one_line(code, err, names="stride-0")
    assert not list(tmp_path.iterdir())


def test_stored_truncation_centre_is_checked(tmp_path, capsys, stride0_files):
    assert_refused(tmp_path, ["sample", "--ckpt", stride0_files["huge w_avg"], "--trunc", "0.5", "--outdir",
                              tmp_path / "o", "-q"], capsys, code=1, names="extra.w_avg")
    for value, names in ((torch.zeros(3, 5), "does not fit"), (torch.full((16,), float("nan")), "non-finite")):
        ck = tiny_checkpoint()
        ck["extra"]["w_avg"] = value
        path = checkpoint.save(ck, tmp_path / "avg.pt")
        assert_refused(tmp_path, ["sample", "--ckpt", path, "--trunc", "0.5", "--outdir", tmp_path / "o", "-q"],
                       capsys, code=1, names=names)
    assert not (tmp_path / "o").exists()


def test_model_config_beyond_the_memory_budget(tmp_path, capsys, good_ckpt, monkeypatch):
    recipe = tmp_path / "big.toml"
    recipe.write_text('[model]\nname = "stylegan2"\nresolution = 32\nstyle_dim = 100000\n')
    code, err = run_capped(["visualize", "--model", "stylegan2", "--resolution", "32", "--set",
                            "model.style_dim=100000", "--outdir", tmp_path / "v"])
    assert_one_line(code, err, expected=2, names="refusing")
    code, err = run_capped(["bench", "--recipe", recipe, "--device", "cpu", "--json"])
    assert_one_line(code, err, expected=2, names="refusing")
    # the budget itself: a budget smaller than the tiny model is refused by name, before building it
    monkeypatch.setenv("NATGAN_MEMORY_BUDGET", "1K")
    assert_refused(tmp_path, ["sample", "--ckpt", good_ckpt, "--seeds", "0", "--outdir", tmp_path / "o"], capsys,
                   code=1, names="of memory available")
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def npz_declaring(path: Path, key: str, shape: tuple, extra: dict | None = None) -> Path:
    import struct

    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (64 - (10 + len(header) + 1) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 256)
        for name, value in (extra or {}).items():
            buf = io.BytesIO()
            np.save(buf, value)
            zf.writestr(f"{name}.npy", buf.getvalue())
    return path


def test_npz_headers_declaring_huge_arrays(tmp_path, capsys, good_ckpt):
    w = npz_declaring(tmp_path / "w.npz", "w", (10 ** 12, 64))
    dirs = npz_declaring(tmp_path / "d.npz", "directions", (10 ** 12, 64),
                         {"layers": np.array([0]), "space": np.array("w")})
    base = ["sample", "--ckpt", good_ckpt, "--outdir", tmp_path / "o", "-q"]
    assert_refused(tmp_path, base + ["--w", w], capsys, code=1, names="declares shape [1000000000000, 64]")
    assert_refused(tmp_path, base + ["--direction", f"{dirs}:0"], capsys, code=1, names="declares shape")
    code, err = run_capped(base + ["--w", w])
    assert_one_line(code, err, names="declares shape")


def test_long_outputs_are_bounded_or_streamed(tmp_path, capsys, good_ckpt):
    base = ["sample", "--ckpt", good_ckpt, "--outdir", tmp_path / "o", "-q"]
    dirs = tmp_path / "dirs.npz"
    np.savez(dirs, directions=np.ones((2, 16), np.float32), layers=np.array([0]), space=np.array("w"))
    code, err = run_capped(base + ["--direction", f"{dirs}:0", "--steps", "1000000000"])
    assert_one_line(code, err, expected=2, names="--steps 1000000000")
    code, err = run_capped(base + ["--style-mix", "0-99999", "--with", "0-99999", "--layers", "0"])
    assert_one_line(code, err, expected=2, names="at most 4096")
    code, err = run_capped(base + ["--interpolate", "1,2,3", "--frames", "1000000"],
                           env={"NATGAN_MEMORY_BUDGET": "100M"})
    assert_one_line(code, err, expected=2, names="use --video mp4")
    assert not (tmp_path / "o").exists()


def test_walk_video_frames_stream_to_the_encoder(tmp_path, monkeypatch, good_ckpt):
    """An MP4 walk renders a batch, encodes it, renders the next: the first frame reaches the encoder long
    before the last is rendered (a million-frame walk never sits in memory)."""
    from natgan.sampling import generate, video

    rendered = {"n": 0, "at_first_frame": None}
    real_run = generate.ImageGenerator._run

    def counting_run(self, fn, inputs, *args, **kwargs):
        rendered["n"] += len(inputs)
        return real_run(self, fn, inputs, *args, **kwargs)

    class Stop(Exception):
        pass

    def add(self, frame):
        rendered["at_first_frame"] = rendered["n"]
        raise Stop

    monkeypatch.setattr(generate.ImageGenerator, "_run", counting_run)
    monkeypatch.setattr(video.Mp4Writer, "add", add)
    with pytest.raises(Stop):
        main(["sample", "--ckpt", str(good_ckpt), "--interpolate", "1,2,3", "--frames", "400", "--video", "mp4",
              "--batch", "8", "--outdir", str(tmp_path / "o"), "-q"])
    assert rendered["at_first_frame"] is not None and rendered["at_first_frame"] <= 16, rendered


# ------------------------------------------------------------------ non-finite and out-of-range numbers
def test_non_finite_and_out_of_range_options(tmp_path, capsys, good_ckpt):
    dirs = tmp_path / "dirs.npz"
    np.savez(dirs, directions=np.ones((2, 16), np.float32), layers=np.array([0]), space=np.array("w"))
    base = ["sample", "--ckpt", good_ckpt, "--outdir", tmp_path / "o", "-q"]
    cases = [
        (["--direction", f"{dirs}:0", "--strength", "nan,1"], "--strength nan"),
        (["--direction", f"{dirs}:0", "--strength", "inf,-inf"], "--strength inf"),
        (["--direction", f"{dirs}:0", "--strength", "1e400,1"], "--strength inf"),
        (["--interpolate", "1,2,3", "--frames", "3", "--video", "mp4", "--fps", "inf"], "--fps inf"),
        (["--interpolate", "1,2", "--frames", "3", "--fps", "1e400"], "--fps inf"),
        (["--trunc", "1e308"], "--trunc 1e+308"),
        (["--trunc", "-1e308"], "--trunc -1e+308"),
    ]
    for extra, names in cases:
        assert_refused(tmp_path, base + extra, capsys, code=2, names=names)
    assert_refused(tmp_path, ["fid", "--ckpt", good_ckpt, "--data", tmp_path, "--num", "2", "--trunc", "1e308"],
                   capsys, code=2, names="--trunc")
    assert not (tmp_path / "o").exists()


def latents_file(path: Path, w, names=("a",), **extra) -> Path:
    np.savez(path, w=w, space=np.array("w"), names=np.array(list(names)), **extra)
    return path


def test_non_finite_and_malformed_latents(tmp_path, capsys, good_ckpt):
    base = ["sample", "--ckpt", good_ckpt, "--outdir", tmp_path / "o", "-q", "--w"]
    cases = [
        (latents_file(tmp_path / "nan.npz", np.full((1, 16), np.nan, np.float32)), "non-finite"),
        (latents_file(tmp_path / "inf.npz", np.full((1, 16), np.inf, np.float32)), "non-finite"),
        (latents_file(tmp_path / "big.npz", np.full((1, 16), 1e300)), "non-finite"),
        (latents_file(tmp_path / "complex.npz", np.full((1, 16), 1 + 1j, np.complex64)), "complex"),
        (latents_file(tmp_path / "dup.npz", np.zeros((2, 16), np.float32), names=("a", "a")), "'a' is given to two"),
        (latents_file(tmp_path / "slash.npz", np.zeros((1, 16), np.float32), names=("../x",)), "plain file name"),
    ]
    np.savez(tmp_path / "zero_d.npz", w=np.float32(1))
    cases.append((tmp_path / "zero_d.npz", "'w' has shape ()"))
    for path, names in cases:
        assert_refused(tmp_path, base + [path], capsys, code=1, names=names)
    assert not (tmp_path / "o").exists()


def test_project_init_with_non_finite_latents(tmp_path, capsys, good_ckpt):
    target = tmp_path / "t.png"
    target.write_bytes(png(0))
    init = latents_file(tmp_path / "nan.npz", np.full((1, 16), np.nan, np.float32))
    assert_refused(tmp_path, ["project", "--ckpt", good_ckpt, "--target", target, "--init", init, "--steps", "1",
                              "--random-lpips", "--outdir", tmp_path / "p", "-q"], capsys, code=1, names="non-finite")
    assert not (tmp_path / "p").exists()


def directions_file(path: Path, directions, layers=(0,), space="w") -> Path:
    np.savez(path, directions=directions, layers=np.array(layers), space=np.array(space))
    return path


def test_malformed_directions(tmp_path, capsys, good_ckpt):
    ones = np.ones((2, 8), np.float32)
    cases = [
        (directions_file(tmp_path / "nan.npz", np.full((2, 8), np.nan, np.float32)), "non-finite"),
        (directions_file(tmp_path / "inf.npz", np.full((2, 8), np.inf, np.float32)), "non-finite"),
        (directions_file(tmp_path / "l999.npz", ones, layers=(999,)), "layers [999] do not fit"),
        (directions_file(tmp_path / "neg.npz", ones, layers=(-5,)), "'layers'"),
        (directions_file(tmp_path / "zero_d.npz", np.float32(1)), "'directions' has shape []"),
        (directions_file(tmp_path / "one_d.npz", np.ones(8, np.float32)), "'directions' has shape [8]"),
        (directions_file(tmp_path / "space.npz", ones, space="z"), "z space"),
        (directions_file(tmp_path / "bogus.npz", ones, space="q"), "'space'"),
    ]
    for path, names in cases:
        assert_refused(tmp_path, ["sample", "--ckpt", good_ckpt, "--outdir", tmp_path / "o", "-q", "--direction",
                                  f"{path}:0"], capsys, code=1, names=names)
    assert not (tmp_path / "o").exists()


def test_malformed_option_lists(tmp_path, capsys, good_ckpt):
    base = ["sample", "--ckpt", good_ckpt, "--outdir", tmp_path / "o", "-q"]
    for video, names in (("gif,gif", "given twice"), ("mp4,", "empty item"), ("GIF", "'GIF' is not a format")):
        assert_refused(tmp_path, base + ["--interpolate", "1,2,3", "--frames", "3", "--video", video], capsys,
                       code=2, names=names)
    assert_refused(tmp_path, base + ["--interpolate", ""], capsys, code=2, names="--interpolate ''")
    assert_refused(tmp_path, ["directions", "--ckpt", good_ckpt, "--out", tmp_path / "d.npz", "--layers", ""],
                   capsys, code=2, names="--layers")
    assert not (tmp_path / "o").exists() and not (tmp_path / "d.npz").exists()


# ------------------------------------------------------------------ output names
def test_output_files_that_cannot_be_written(tmp_path, capsys, good_ckpt):
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_refused(tmp_path, ["directions", "--ckpt", good_ckpt, "--out", ""], capsys, code=2, names="--out")
    assert_refused(tmp_path, ["directions", "--ckpt", good_ckpt, "--out", folder], capsys, code=2,
                   names="is a directory")
    assert_refused(tmp_path, ["bench", "--model", "_tiny_test", "--output", folder, "--device", "cpu"], capsys,
                   code=2, names="is a directory")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nname = "_tiny_test"\n')
    assert_refused(tmp_path, ["bench", "--recipe", recipe, "--output", recipe, "--device", "cpu"], capsys, code=2,
                   names="is the input --recipe")


def test_recipe_strings_with_newlines_round_trip():
    import tomllib

    from natgan import recipe as recipes

    for value in ("a\nb", 'quote " and \\ backslash', "\x00\x1f\x7f", "tab\tcr\r"):
        text = recipes.dump_toml({"data": {"path": value}})
        assert tomllib.loads(text)["data"]["path"] == value


# ------------------------------------------------------------------ one-line gaps
def test_permission_errors_are_one_line(tmp_path, capsys, good_ckpt, monkeypatch):
    """A read-only directory (simulated: the tests may run as root, which permissions do not stop)."""
    from natgan import fsutil

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "o" / "seed0000.png"))

    monkeypatch.setattr(fsutil, "atomic_write", refuse)
    monkeypatch.setattr("natgan.sampling.export.atomic_write", refuse, raising=False)
    assert_refused(tmp_path, ["sample", "--ckpt", good_ckpt, "--seeds", "0", "--outdir", tmp_path / "o", "-q"],
                   capsys, code=1, names="Permission denied")


@pytest.mark.parametrize("where", ["file", "/dev/null", "/proc"])
def test_unusable_cache_directory(tmp_path, capsys, monkeypatch, where):
    import json

    from natgan.errors import ConfigError
    from natgan.metrics.cache import cache_dir

    target = tmp_path / "afile" if where == "file" else Path(where)
    if where == "file":
        target.write_text("x")
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(target))
    with pytest.raises(ConfigError, match=r"\$NATGAN_CACHE_DIR="):
        cache_dir()
    with pytest.raises(SystemExit):
        main(["doctor", "--json", "--no-attention", "--run-dir", str(tmp_path / "runs")])
    checks = {(c["group"], c["name"]): c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks[("dirs", "cache")]["status"] == "fail" and "NATGAN_CACHE_DIR" in checks[("dirs", "cache")]["detail"]


def test_unknown_attention_backend(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NATGAN_NA_BACKEND", "bogus")
    assert_refused(tmp_path, ["visualize", "--model", "stylenat", "--resolution", "32", "--set",
                              "model.channel_multiplier=1", "--outdir", tmp_path / "v"], capsys, code=2,
                   names="unknown backend 'bogus'")


def test_doctor_reports_a_truncated_weights_file(tmp_path, capsys, monkeypatch):
    import json

    from natgan.metrics.weights import weights_for_mode

    weights = tmp_path / "weights"
    weights.mkdir()
    spec = weights_for_mode("legacy_pytorch")
    whole = io.BytesIO()
    torch.save({"w": torch.zeros(100)}, whole)
    (weights / spec.filename).write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    monkeypatch.setenv("NATGAN_INCEPTION", str(weights))
    code, out = None, ""
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--json", "--no-attention", "--run-dir", str(tmp_path / "runs")])
    code, out = exc.value.code, capsys.readouterr().out
    rows = {(r["group"], r["name"]): r for r in json.loads(out)["checks"]}
    row = rows[("fid", "Inception for legacy_pytorch")]
    assert row["status"] == "fail" and "truncated" in row["detail"], row
    assert code == 1


def test_absurd_images_are_refused_before_decoding(tmp_path, capsys):
    import struct
    import zlib

    def png_of(width: int, height: int) -> bytes:
        raw = zlib.compress(b"".join(b"\0" + b"\0" * 3 * width for _ in range(height)), 9)

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
            chunk(b"IDAT", raw) + chunk(b"IEND", b"")

    for name, data in (("wide", png_of(2_000_000, 1)), ("tall", png_of(1, 80_000))):
        src = tmp_path / name
        src.mkdir()
        (src / "x.png").write_bytes(data)
        assert_refused(tmp_path, ["prepare", "folder", src, "--out", tmp_path / f"{name}.lmdb", "--sizes", "8",
                                  "--workers", "0", "--no-progress"], capsys, code=1, names="aspect ratio")
        assert not (tmp_path / f"{name}.lmdb").exists()


def test_huge_files_are_not_read_whole(tmp_path, good_ckpt):
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as fh:
        fh.write(png(0))
        fh.truncate(3 << 30)  # 3 GiB on paper, nothing on disk
    code, err = run_capped(["project", "--ckpt", good_ckpt, "--target", sparse, "--random-lpips", "--steps", "1",
                            "--outdir", tmp_path / "p", "-q"])
    assert_one_line(code, err, names="bytes, more than")
    code, err = run_capped(["train", "--recipe", sparse, "--outdir", tmp_path / "run", "--dry-run"])
    assert_one_line(code, err, expected=2, names="is not a recipe")
    assert not (tmp_path / "p").exists() and not (tmp_path / "run").exists()


def test_prepare_workers_are_bounded(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "0.png").write_bytes(png(0))
    assert_refused(tmp_path, ["prepare", "folder", src, "--out", tmp_path / "o.lmdb", "--sizes", "8", "--workers",
                              "100000", "--no-progress"], capsys, code=2, names="--workers 100000")
    assert not (tmp_path / "o.lmdb").exists()


# ------------------------------------------------------------------ data safety on resume
def run_dir_with(tmp_path: Path, *checkpoints: tuple[int, dict], run_id: str | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for step, ck in checkpoints:
        checkpoint.save(ck, run / f"ckpt-{step:07d}.pt")
    if run_id is not None:
        (run / "run-id").write_text(run_id + "\n")
    return run


def with_run_id(ck: dict, run_id: str) -> dict:
    ck["extra"]["run_id"] = run_id
    return ck


def test_a_nan_checkpoint_is_never_the_last_good_one(tmp_path, capsys):
    from natgan.train.rundir import RunDir

    nan = with_run_id(tiny_checkpoint(step=9), "run-a")
    nan["weights"]["D"] = {k: torch.full_like(v, float("nan")) for k, v in nan["weights"]["D"].items()}
    run = run_dir_with(tmp_path, (7, with_run_id(tiny_checkpoint(step=7), "run-a")), (9, nan), run_id="run-a")
    best = RunDir(run).newest_valid()
    assert best is not None and best[0].name == "ckpt-0000007.pt"
    assert_refused(tmp_path, ["train", "--resume", run / "ckpt-0000009.pt", "--outdir", run, "--dry-run"], capsys,
                   code=1, names="key 'weights.D.")


def test_resume_refuses_non_finite_optimiser_state(tmp_path, capsys):
    ck = with_run_id(tiny_checkpoint(step=7), "run-a")
    state = ck["optim"]["G"]["state"]
    first = next(iter(state))
    state[first]["exp_avg"] = torch.full_like(state[first]["exp_avg"], float("inf"))
    path = checkpoint.save(ck, tmp_path / "inf.pt")
    assert_refused(tmp_path, ["train", "--resume", path, "--outdir", tmp_path / "run", "--dry-run"], capsys,
                   code=1, names="key 'optim.G.state")


def test_resume_auto_does_not_continue_another_runs_checkpoint(tmp_path, capsys):
    run = run_dir_with(tmp_path, (7, with_run_id(tiny_checkpoint(step=7), "run-b")), run_id="run-a")
    err = assert_refused(tmp_path, ["train", "--resume", "auto", "--outdir", run, "--dry-run"], capsys, code=1,
                         names="belongs to run run-b")
    assert "holds run run-a" in err


def test_start_over_moves_everything_of_the_old_run(tmp_path):
    from natgan.train.resume_policy import set_aside_for_new_start

    run = run_dir_with(tmp_path, (7, with_run_id(tiny_checkpoint(step=7), "run-a")), run_id="run-a")
    checkpoint.save(with_run_id(tiny_checkpoint(step=5), "run-a"), run / "best.pt")
    (run / "recipe.toml").write_text('[model]\nname = "_tiny_test"\n')
    (run / "log.txt").write_text("step 7\n")
    (run / "samples").mkdir()
    (run / "samples" / "step-0000007.png").write_bytes(png(0))
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    previous = set_aside_for_new_start(run)
    after = {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    assert after == {k: v for k, v in before.items() if k.name != ".lock"}
    assert {p.name for p in run.iterdir()} <= {previous.name, ".lock"}


def test_pr_with_too_few_images_is_refused_before_features(tmp_path, capsys, monkeypatch):
    from natgan.metrics import FeatureExtractor, runner

    calls = []

    class Net(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    monkeypatch.setattr(runner, "build_inception",
                        lambda mode, *, device="cpu", **_: FeatureExtractor(Net().eval(), mode=mode, device=device))
    a, b = tmp_path / "a", tmp_path / "b"
    for d, n in ((a, 5), (b, 8)):
        d.mkdir()
        for i in range(n):
            (d / f"{i}.png").write_bytes(png(i + 20 * n))
    assert_refused(tmp_path, ["fid", a, b, "--metrics", "pr", "--pr-features", "inception", "--workers", "0",
                              "--no-cache", "-q"], capsys, code=1, names=f"A {a}: 5 image(s)")
    assert not calls, "features were computed before the refusal"


def test_a_killed_projection_leaves_a_consistent_combined_file(tmp_path, monkeypatch):
    from natgan.latent import outputs
    from natgan.latent.store import load_latents
    from test_latent_cli import family_checkpoint

    good_ckpt = tmp_path / "sg2.pt"
    family_checkpoint("stylegan2", good_ckpt)

    targets = tmp_path / "targets"
    targets.mkdir()
    for i, name in enumerate(("a", "b")):
        (targets / f"{name}.png").write_bytes(png(i))
    out = tmp_path / "proj"
    args = ["project", "--ckpt", str(good_ckpt), "--target", str(targets), "--steps", "2", "--random-lpips",
            "--outdir", str(out), "-q"]
    with pytest.raises(SystemExit):
        main(args + ["--seed", "1"])
    real, calls = outputs.project, []

    def dies_on_the_second_target(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit(137)  # as if killed while projecting 'b'
        return real(*a, **k)

    monkeypatch.setattr(outputs, "project", dies_on_the_second_target)
    with pytest.raises(SystemExit):
        main(args + ["--seed", "2", "--overwrite"])  # a second run over the first one's outputs
    combined = load_latents(out / "projected_w.npz")
    assert combined.names == ["a"]
    assert torch.equal(combined.w, load_latents(out / "a" / "projected_w.npz").w)


def test_relative_data_paths_are_stored_absolute_and_named_on_resume(tmp_path, capsys, monkeypatch, good_lmdb):
    import shutil

    from natgan.train import resolve_run

    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(good_lmdb, work / "data.lmdb")
    recipe = work / "r.toml"
    recipe.write_text('[model]\nname = "_tiny_test"\n[data]\npath = "data.lmdb"\n')
    monkeypatch.chdir(work)
    resolved, _, _ = resolve_run(recipe_path=recipe, overrides=[], outdir=work / "run", resume=None)
    assert resolved.data.path == str(work / "data.lmdb")
    ck = tiny_checkpoint()
    ck["recipe"]["data"]["path"] = "elsewhere/data.lmdb"  # a run stored before paths were made absolute
    old = checkpoint.save(ck, tmp_path / "old.pt")
    code, err = run_cli(["train", "--resume", old, "--outdir", tmp_path / "run2"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert "elsewhere/data.lmdb" in errors[0] and f"{old} (stored recipe)" in errors[0]
    assert "current directory" in errors[0] and not (tmp_path / "run2").exists()


def test_w_average_samples_are_bounded(tmp_path, good_ckpt):
    target = tmp_path / "t.png"
    target.write_bytes(png(0))
    base = ["project", "--ckpt", good_ckpt, "--target", target, "--random-lpips", "--steps", "1", "--outdir",
            tmp_path / "p", "-q", "--w-avg-samples"]
    code, err = run_capped(base + ["100000000"])
    assert_one_line(code, err, expected=2, names="--w-avg-samples")
    code, err = run_capped(base + ["1000000"], env={"NATGAN_MEMORY_BUDGET": "1M"})
    assert_one_line(code, err, expected=2, names="(--w-avg-samples) needs")
    assert not (tmp_path / "p").exists()


def test_prepare_works_under_an_address_space_limit(tmp_path):
    """LMDB reserves 1 TiB of address space; under `ulimit -v` the builder maps what is left instead."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(png(i))
    code, err = run_capped(["prepare", "folder", src, "--out", tmp_path / "o.lmdb", "--sizes", "8", "--workers",
                            "0", "--no-progress"])
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert (tmp_path / "o.lmdb" / "data.mdb").exists()
