"""`nat-gan prepare`: sources (folder, zip, LSUN LMDB), official layout, metadata, safety, digits, CLI.

Real images throughout: crops of the two photographs scikit-learn ships (china.jpg, flower.jpg) and
the scikit-learn digits. The official layout is read back with a reader written here from the
format description (plain ``lmdb`` + PIL), independent of ``natgan.data``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from natgan.cli import main
from natgan.data import check_dataset, imaging, open_dataset, prepare_dataset, prepare_digits
from natgan.data.parallel import OrderedMap
from natgan.data.prepare import Transcoder
from natgan.errors import ConfigError, DataError
from natgan.fsutil import pid_alive

SKLEARN_IMAGES = Path(list(importlib.util.find_spec("sklearn").submodule_search_locations)[0]) / "datasets" / "images"

# (relative path, photo, crop box, output size): mixed aspect ratios, one image smaller than 64 px
LAYOUT = [
    ("a/0001.jpg", "china.jpg", (0, 0, 420, 300), None),
    ("a/0002.png", "flower.jpg", (100, 50, 400, 420), None),
    ("b/c/0003.webp", "china.jpg", (200, 100, 456, 356), None),
    ("b/0004.jpg", "flower.jpg", (0, 0, 640, 427), (320, 213)),
    ("0005.png", "china.jpg", (300, 0, 500, 400), None),
    ("0006.jpg", "flower.jpg", (250, 150, 290, 198), None),   # 40x48: upscaled to 64
    ("z/0007.bmp", "china.jpg", (10, 10, 210, 160), None),
    ("z/0008.jpg", "flower.jpg", (5, 200, 405, 427), None),
]
N = len(LAYOUT)


def photo_bytes() -> dict[str, bytes]:
    """Encoded images keyed by relative path (format from the extension)."""
    out = {}
    for rel, name, box, size in LAYOUT:
        img = Image.open(SKLEARN_IMAGES / name).convert("RGB").crop(box)
        if size:
            img = img.resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}[Path(rel).suffix]
        img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        out[rel] = buf.getvalue()
    return out


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "LICENSE.txt").write_text("not an image, ignored\n")
    (root / ".hidden.jpg").write_bytes(b"hidden files are ignored")
    return root


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel in reversed(list(files)):  # member order must not matter
            zf.writestr(f"imgs/{rel}", files[rel])
        zf.writestr("imgs/README.md", "ignored")
    return path


def write_lsun(path: Path, files: dict[str, bytes]) -> tuple[Path, list[bytes]]:
    """LSUN's export layout: sha1-hex keys -> webp bytes. Returns the webp values in key order."""
    env = lmdb.open(str(path), map_size=1 << 30)
    items = {}
    for data in files.values():
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(buf, format="WEBP", quality=90)
        items[hashlib.sha1(buf.getvalue()).hexdigest().encode()] = buf.getvalue()
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value)
    env.close()
    return path, [items[k] for k in sorted(items)]


def expected_square(data: bytes, size: int) -> np.ndarray:
    """Independent statement of the official rule: shorter side -> size (Lanczos), centre crop."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))


def read_official(path: Path) -> tuple[int, dict[str, bytes]]:
    """What the official MultiResolutionDataset sees: `length` and `{size}-{index:05d}` records."""
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    with env.begin() as txn:
        length = int(txn.get(b"length").decode("utf-8"))
        records = {k.decode(): v for k, v in txn.cursor()
                   if k not in (b"length", b"__natgan_meta__", b"__natgan_labels__")}
    env.close()
    return length, records


def read_meta(path: Path) -> dict:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        meta = json.loads(txn.get(b"__natgan_meta__"))
    env.close()
    return meta


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return photo_bytes()


@pytest.fixture(scope="module")
def sources(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("sources")
    folder = write_folder(root / "folder", files)
    zpath = write_zip(root / "photos.zip", files)
    lsun, lsun_values = write_lsun(root / "church_outdoor_train_lmdb", files)
    return {"folder": folder, "zip": zpath, "lsun": lsun, "lsun_values": lsun_values}


@pytest.fixture(scope="module")
def built(tmp_path_factory, sources):
    """One folder build at two sizes, PNG so pixels can be compared exactly."""
    out = tmp_path_factory.mktemp("built") / "photos.lmdb"
    result = prepare_dataset(sources["folder"], out, sizes="64,32", encoding="png", workers=0, progress=False)
    return out, result


# ---------------------------------------------------------------- layout, order, metadata

def test_folder_build_official_layout(built, files):
    out, result = built
    assert result["status"] == "built" and result["count"] == N and result["sizes"] == [32, 64]
    length, records = read_official(out)
    assert length == N
    assert sorted(records) == sorted(f"{s}-{i:05d}" for s in (32, 64) for i in range(N))
    names = sorted(files)  # deterministic order: sorted relative paths
    for i, name in enumerate(names):
        for size in (32, 64):
            assert np.array_equal(decode(records[f"{size}-{i:05d}"]), expected_square(files[name], size)), (name, size)


def test_metadata_record(built, sources):
    out, result = built
    meta = read_meta(out)
    assert meta["format"] == "natgan-lmdb" and meta["format_version"] == 1
    assert meta["count"] == N and meta["sizes"] == [32, 64]
    assert meta["resize"] == {"method": "shorter-side+center-crop", "filter": "lanczos"}
    assert meta["encoding"] == "png" and meta["skipped"] == [] and meta["ignored_files"] == 1
    assert meta["source"]["path"] == str(sources["folder"].absolute()) and meta["source"]["layout"] == "folder"
    assert meta["content_hash"] == result["content_hash"] and meta["content_hash"].startswith("sha256:")
    assert set(meta["size_hashes"]) == {"32", "64"}
    assert meta["upscaled"] == 1 and any("upscaled" in w for w in meta["warnings"])


def test_jpeg_default_is_quality_100_and_official_reader_decodes(tmp_path, sources, files):
    out = tmp_path / "jpeg.lmdb"
    result = prepare_dataset(sources["folder"], out, sizes=48, workers=0, progress=False)
    assert result["encoding"] == "jpeg" and read_meta(out)["jpeg_quality"] == 100
    _, records = read_official(out)
    first = records["48-00000"]
    assert first[:3] == b"\xff\xd8\xff"
    buf = io.BytesIO()  # the official builder: PIL JPEG, quality=100, other settings default
    Image.fromarray(expected_square(files[sorted(files)[0]], 48)).save(buf, format="JPEG", quality=100)
    assert first == buf.getvalue()


def test_zip_and_folder_give_identical_records(tmp_path, sources, built):
    out = tmp_path / "zip.lmdb"
    result = prepare_dataset(sources["zip"], out, sizes=[32, 64], encoding="png", workers=0, progress=False)
    assert result["count"] == N and result["ignored_files"] == 1
    assert result["content_hash"] == built[1]["content_hash"]


def test_lsun_lmdb_source_uses_sorted_keys(tmp_path, sources):
    out = tmp_path / "church.lmdb"
    result = prepare_dataset(sources["lsun"], out, dataset="church", sizes=32, encoding="png", workers=0,
                             progress=False)
    assert result["count"] == N
    assert any("126,227" in w for w in result["warnings"])  # a subset of LSUN Church is flagged
    _, records = read_official(out)
    for i, value in enumerate(sources["lsun_values"]):
        assert np.array_equal(decode(records[f"32-{i:05d}"]), expected_square(value, 32))


def test_parallel_workers_match_inline_and_rerun_is_deterministic(tmp_path, sources, built):
    out = tmp_path / "par.lmdb"
    result = prepare_dataset(sources["folder"], out, sizes=[32, 64], encoding="png", workers=2, progress=False)
    assert result["content_hash"] == built[1]["content_hash"]
    again = prepare_dataset(sources["folder"], tmp_path / "par2.lmdb", sizes=[32, 64], encoding="png", workers=2,
                            progress=False)
    assert again["content_hash"] == result["content_hash"]


class _ReportsBlockCache:
    """Picklable worker callable: reports the Pillow block cache its process ended up with."""

    def setup_worker(self):
        imaging.cache_image_memory()

    def __call__(self, item):
        return item, Image.core.get_blocks_max()


def test_pool_workers_reuse_image_memory_and_leave_the_caller_alone():
    before = Image.core.get_blocks_max()
    with OrderedMap(_ReportsBlockCache(), range(6), workers=2) as results:
        got = list(results)
    assert [i for i, _ in got] == list(range(6))
    assert all(blocks >= imaging.IMAGE_BLOCK_CACHE for _, blocks in got)
    assert Image.core.get_blocks_max() == before  # the parent process is not retuned
    assert [b for _, b in OrderedMap(_ReportsBlockCache(), range(2), workers=0)] == [before, before]
    assert hasattr(Transcoder, "setup_worker")


def test_max_images(tmp_path, sources, files):
    seen = []
    result = prepare_dataset(sources["folder"], tmp_path / "sub.lmdb", sizes=32, encoding="png", max_images=3,
                             workers=2, progress=False, on_progress=lambda done, total: seen.append((done, total)))
    assert result["count"] == 3 and seen[-1] == (3, 3)
    length, records = read_official(tmp_path / "sub.lmdb")
    assert length == 3 and len(records) == 3
    assert np.array_equal(decode(records["32-00002"]), expected_square(files[sorted(files)[2]], 32))


def test_official_lmdb_can_be_a_source(tmp_path, built):
    out = tmp_path / "from_lmdb.lmdb"
    result = prepare_dataset(built[0], out, sizes=16, encoding="png", workers=0, progress=False)
    assert result["count"] == N
    src = open_dataset(built[0], 64)
    _, records = read_official(out)
    want = Image.fromarray(src[5]).resize((16, 16), Image.Resampling.LANCZOS)
    assert np.array_equal(decode(records["16-00005"]), np.asarray(want))


# ---------------------------------------------------------------- bad inputs

@pytest.fixture()
def bad_folder(tmp_path, files):
    root = write_folder(tmp_path / "bad", files)
    (root / "a" / "0001b_truncated.jpg").write_bytes(files["a/0001.jpg"][: len(files["a/0001.jpg"]) // 2])
    (root / "b" / "notes.png").write_text("this is text, not a PNG")
    return root


def test_bad_image_stops_with_its_path(tmp_path, bad_folder):
    out = tmp_path / "bad.lmdb"
    with pytest.raises(DataError) as exc:
        prepare_dataset(bad_folder, out, sizes=32, workers=0, progress=False)
    assert str(bad_folder / "a" / "0001b_truncated.jpg") in str(exc.value) and "--skip-bad" in str(exc.value)
    assert not out.exists() and not list(tmp_path.glob("bad.lmdb.partial-*"))


def test_skip_bad_lists_skipped_files(tmp_path, bad_folder):
    out = tmp_path / "bad.lmdb"
    result = prepare_dataset(bad_folder, out, sizes=32, workers=2, skip_bad=True, progress=False)
    skipped = sorted(s["path"] for s in result["skipped"])
    assert skipped == [str(bad_folder / "a" / "0001b_truncated.jpg"), str(bad_folder / "b" / "notes.png")]
    assert result["count"] == N
    length, records = read_official(out)
    assert length == N and sorted(records) == [f"32-{i:05d}" for i in range(N)]  # indices stay contiguous
    assert [s["path"] for s in read_meta(out)["skipped"]] == [s["path"] for s in result["skipped"]]


def test_wrong_sources(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        prepare_dataset(tmp_path / "missing", tmp_path / "o.lmdb", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        prepare_dataset(tmp_path / "empty", tmp_path / "o.lmdb", progress=False)
    lmdb_zip = tmp_path / "church_outdoor_train_lmdb.zip"
    with zipfile.ZipFile(lmdb_zip, "w") as zf:
        zf.writestr("church_outdoor_train_lmdb/data.mdb", b"\0" * 64)
    with pytest.raises(DataError, match="unzip it"):
        prepare_dataset(lmdb_zip, tmp_path / "o.lmdb", dataset="church", progress=False)
    with pytest.raises(ConfigError, match="--sizes"):
        prepare_dataset(tmp_path, tmp_path / "o.lmdb", sizes="256,abc", progress=False)
    with pytest.raises(ConfigError, match="--filter"):
        prepare_dataset(tmp_path, tmp_path / "o.lmdb", filter="nearest", progress=False)
    assert not (tmp_path / "o.lmdb").exists()


# ---------------------------------------------------------------- existing output, --force, idempotence

def test_existing_output_force_and_idempotence(tmp_path, sources):
    out = tmp_path / "x.lmdb"
    first = prepare_dataset(sources["folder"], out, sizes=32, workers=0, progress=False)
    again = prepare_dataset(sources["folder"], out, sizes=32, workers=0, progress=False)
    assert again["status"] == "up-to-date" and again["content_hash"] == first["content_hash"]
    with pytest.raises(ConfigError, match="--overwrite"):
        prepare_dataset(sources["folder"], out, sizes=48, workers=0, progress=False)
    assert read_meta(out)["sizes"] == [32]  # untouched
    rebuilt = prepare_dataset(sources["folder"], out, sizes=48, workers=0, force=True, progress=False)
    assert rebuilt["status"] == "built" and read_meta(out)["sizes"] == [48]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lmdb"]  # no leftovers

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("user data")
    with pytest.raises(DataError, match="not an LMDB directory"):
        prepare_dataset(sources["folder"], keep, sizes=32, workers=0, force=True, progress=False)
    assert (keep / "precious.txt").read_text() == "user data"


# ---------------------------------------------------------------- interruption

KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from natgan.data.prepare import prepare_dataset

    def tick(done, total):
        print(done, flush=True)
        if done >= 12:  # wait here to be killed mid-way (however late a busy machine lets the test react)
            time.sleep(3600)

    prepare_dataset(sys.argv[1], sys.argv[2], sizes=32, workers=2, progress=False, on_progress=tick,
                    batch_images=4)
""")


def test_killed_build_leaves_nothing_that_looks_complete(tmp_path, files):
    src = tmp_path / "many"
    for k in range(5):  # 40 images, enough for several committed batches before the kill
        write_folder(src / f"copy{k}", files)
    out = tmp_path / "killed.lmdb"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(out)], stdout=subprocess.PIPE,
                            text=True)
    done = 0
    for line in proc.stdout:
        done = int(line)
        if done >= 12:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=300)
    assert 12 <= done < 40
    assert not out.exists()
    partials = list(tmp_path.glob("killed.lmdb.partial-*"))
    assert len(partials) == 1
    env = lmdb.open(str(partials[0]), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.stat()["entries"] >= 8 and txn.get(b"length") is None  # committed images, no marker
    env.close()

    from natgan.data import TrainingDataset

    for path in (out, partials[0]):
        with pytest.raises(DataError):
            open_dataset(path)
        with pytest.raises(DataError):
            check_dataset(path, progress=False)
        with pytest.raises(DataError):
            TrainingDataset(path, 32)
    renamed = tmp_path / "renamed.lmdb"  # even under an innocent name it is refused as incomplete
    partials[0].rename(renamed)
    with pytest.raises(DataError, match="incomplete"):
        open_dataset(renamed)
    with pytest.raises(DataError, match="incomplete"):
        check_dataset(renamed, progress=False)
    renamed.rename(partials[0])

    result = prepare_dataset(src, out, sizes=32, workers=0, progress=False)  # re-run cleans up
    assert result["count"] == 40 and not list(tmp_path.glob("killed.lmdb.partial-*"))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=120)
    return proc.pid


def _partial_like(path: Path) -> Path:
    """A directory as a killed builder leaves it (an LMDB without its length record)."""
    lmdb.open(str(path), map_size=1 << 20).close()
    return path


def test_later_prepare_removes_dead_partials_and_names_what_it_leaves(tmp_path, sources, capsys):
    """A killed fresh build leaves <out>.partial-PID; the next prepare of the same --out deletes it and says so
    in one line, and leaves a running process's build, an --overwrite's moved-aside dataset and foreign
    directories alone (each named in one line)."""
    out = tmp_path / "x.lmdb"
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        stale = _partial_like(tmp_path / f"x.lmdb.partial-{dead}")
        running = _partial_like(tmp_path / f"x.lmdb.partial-{live.pid}")
        aside = _partial_like(tmp_path / f"x.lmdb.replaced-{dead}")
        foreign = tmp_path / "x.lmdb.partial-999999999"                 # above any pid_max: a dead pid
        assert not pid_alive(999999999)
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
        other = _partial_like(tmp_path / f"y.lmdb.partial-{dead}")          # another --out's: not looked at

        code, _, err = run(capsys, "prepare", "folder", sources["folder"], "--out", out, "--sizes", "32",
                           "--workers", "0")
        assert code == 0, err
        assert not stale.exists()
        assert running.is_dir() and aside.is_dir() and (foreign / "notes.txt").is_file() and other.is_dir()
        lines = err.strip().splitlines()
        assert f"removed 1 partial build(s) of the same --out left by killed runs: {stale}" in lines
        assert any(line.startswith("warning: 1 build(s) of the same --out by running processes") and
                   str(running) in line for line in lines)
        assert any(line.startswith(f"warning: {aside}: the dataset an interrupted --overwrite moved aside")
                   for line in lines)
        assert any(line.startswith(f"warning: {foreign}: named like a partial build") for line in lines)

        # the next run finds the dataset up to date; the moved-aside copy now has a published --out beside it
        result = prepare_dataset(sources["folder"], out, sizes=32, workers=0, progress=False)
        assert result["status"] == "up-to-date" and result["leftovers"]["removed"] == [str(aside)]
        assert not aside.exists() and running.is_dir()
    finally:
        live.kill()
        live.wait(timeout=120)
    stale = _partial_like(tmp_path / f"x.lmdb.partial-{dead}")
    result = prepare_dataset(sources["folder"], out, sizes=32, workers=0, progress=False)
    assert result["leftovers"]["removed"] == sorted([str(stale), str(running)])
    assert len(open_dataset(out)) == result["count"] and result["status"] == "up-to-date"


# ---------------------------------------------------------------- check

def test_check_good_then_corrupted(tmp_path, sources):
    out = tmp_path / "c.lmdb"
    result = prepare_dataset(sources["folder"], out, sizes="32,48", workers=0, progress=False)
    report = check_dataset(out, workers=0, progress=False)
    assert report["ok"] and report["hash_ok"] and report["count"] == N
    assert report["sizes"] == {"32": {"records": N, "bad": 0}, "48": {"records": N, "bad": 0}}
    assert report["content_hash"] == result["content_hash"]

    env = lmdb.open(str(out))
    with env.begin(write=True) as txn:
        value = txn.get(b"48-00003")
        txn.put(b"48-00003", value[: len(value) // 3])
    env.close()
    report = check_dataset(out, workers=2, progress=False)
    assert not report["ok"] and report["hash_ok"] is False
    assert report["sizes"]["48"]["bad"] == 1
    assert any("'48-00003'" in p for p in report["problems"])


def test_check_official_lmdb_without_metadata(tmp_path, files):
    out = tmp_path / "official.lmdb"
    env = lmdb.open(str(out), map_size=1 << 30)
    names = sorted(files)
    with env.begin(write=True) as txn:
        for i, name in enumerate(names):
            buf = io.BytesIO()
            Image.fromarray(expected_square(files[name], 32)).save(buf, format="JPEG", quality=100)
            txn.put(f"32-{i:05d}".encode(), buf.getvalue())
        txn.put(b"length", str(len(names)).encode())
    env.close()
    report = check_dataset(out, workers=0, progress=False)
    assert report["ok"] and report["metadata"] is None and report["hash_ok"] is None
    assert report["format"].startswith("official")


# ---------------------------------------------------------------- digits

def test_digits(tmp_path):
    out = tmp_path / "digits.lmdb"
    result = prepare_digits(out, progress=False)
    assert result["count"] == 1797 and result["sizes"] == [32] and result["encoding"] == "png"
    assert result["filter"] == "bicubic" and result["warnings"] == []
    length, records = read_official(out)
    assert length == 1797 and len(records) == 1797
    img = decode(records["32-00000"])
    assert img.shape == (32, 32, 3) and np.array_equal(img[..., 0], img[..., 1])  # grey replicated to RGB
    assert img.max() > 200 and img[0, 0].max() < 30  # white ink on black, dark border
    assert prepare_digits(out, progress=False)["status"] == "up-to-date"


# ---------------------------------------------------------------- CLI

def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exc.value.code or 0, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_cli_prepare_folder_json_and_check(capsys, tmp_path, sources):
    out = tmp_path / "cli.lmdb"
    code, stdout, _ = run(capsys, "prepare", "folder", sources["zip"], "--out", out, "--sizes", "32", "--json",
                          "--workers", "0")
    assert code == 0
    result = json.loads(stdout)
    assert result["count"] == N and result["status"] == "built"
    code, stdout, _ = run(capsys, "prepare", "check", out, "--json", "--workers", "0")
    assert code == 0 and json.loads(stdout)["ok"] is True
    code, stdout, err = run(capsys, "prepare", "folder", sources["zip"], "--out", out, "--sizes", "48")
    assert code == 2 and len(error_lines(err)) == 1 and "--overwrite" in err
    before = sorted(p.name for p in Path(out).iterdir())
    for flag in ("--overwrite", "--force"):  # --force: the old name, kept as a hidden alias
        code, stdout, err = run(capsys, "prepare", "folder", sources["zip"], "--out", out, "--sizes", "48",
                                "--workers", "0", "--json", flag)
        assert code == 0 and json.loads(stdout)["sizes"] == [48], err
    assert sorted(p.name for p in Path(out).iterdir()) == before


def test_cli_ffhq_church_explain_their_source(capsys, tmp_path):
    code, _, err = run(capsys, "prepare", "ffhq")
    assert code == 2 and "github.com/NVlabs/ffhq-dataset" in err and len(error_lines(err)) == 1
    code, _, err = run(capsys, "prepare", "church", tmp_path / "nope")
    assert code == 1 and "church_outdoor_train_lmdb" in err and "github.com/fyu/lsun" in err
    assert len(error_lines(err)) == 1 and "nope" in error_lines(err)[0]


def test_cli_errors_are_one_line_with_exit_codes(capsys, tmp_path, bad_folder):
    code, _, err = run(capsys, "prepare", "folder", bad_folder, "--out", tmp_path / "o.lmdb", "--workers", "0")
    assert code == 1 and len(error_lines(err)) == 1 and "0001b_truncated.jpg" in err
    assert "Traceback" not in err and not (tmp_path / "o.lmdb").exists()
    code, _, err = run(capsys, "prepare", "folder", bad_folder, "--sizes", "0")
    assert code == 2 and "--sizes" in err
    code, _, err = run(capsys, "prepare", "folder", bad_folder, "--encoding", "gif")
    assert code == 2 and "--encoding" in err
    code, _, err = run(capsys, "prepare", "check", tmp_path / "none.lmdb")
    assert code == 1 and len(error_lines(err)) == 1
    code, stdout, err = run(capsys, "prepare", "folder", bad_folder, "--out", tmp_path / "s.lmdb", "--skip-bad",
                            "--workers", "0", "--sizes", "32")
    assert code == 0 and "skipped 2 unreadable files" in err and "notes.png" in err


def test_cli_check_fails_on_damage(capsys, tmp_path, sources):
    out = tmp_path / "d.lmdb"
    prepare_dataset(sources["folder"], out, sizes=32, workers=0, progress=False)
    env = lmdb.open(str(out))
    with env.begin(write=True) as txn:
        txn.delete(b"32-00001")
    env.close()
    code, _, err = run(capsys, "prepare", "check", out, "--workers", "0", "--no-progress")
    assert code == 1 and len(error_lines(err)) == 1 and "32-00001" in err


def test_cli_digits(capsys, tmp_path):
    out = tmp_path / "digits.lmdb"
    code, stdout, _ = run(capsys, "prepare", "digits", "--out", out, "--sizes", "16", "--max-images", "100",
                          "--no-progress")
    assert code == 0 and "100 images" in stdout
    assert read_official(out)[0] == 100


def test_progress_callback_reports_every_image(tmp_path, sources):
    calls = []
    prepare_dataset(sources["folder"], tmp_path / "p.lmdb", sizes=16, workers=0, progress=False,
                    on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, N) for i in range(1, N + 1)]


def test_resize_rule_matches_torchvision():
    """Same pixels as the official builder's torchvision resize + centre crop."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    from natgan.data.imaging import FILTERS, resize_square

    photo = Image.open(SKLEARN_IMAGES / "china.jpg").convert("RGB")
    modes = {"lanczos": InterpolationMode.LANCZOS, "bicubic": InterpolationMode.BICUBIC,
             "box": InterpolationMode.BOX, "bilinear": InterpolationMode.BILINEAR}
    for box in [(0, 0, 640, 427), (0, 0, 301, 427), (13, 7, 250, 99)]:
        img = photo.crop(box)
        for size in (17, 64, 128):
            for name, mode in modes.items():
                ref = TF.center_crop(TF.resize(img, size, interpolation=mode), size)
                assert np.array_equal(np.asarray(resize_square(img, size, FILTERS[name])), np.asarray(ref))


def test_check_refuses_raw_lsun_lmdb_and_explains(sources):
    with pytest.raises(DataError, match="nat-gan prepare church"):
        check_dataset(sources["lsun"], progress=False)


def test_rebuild_refusal_names_what_changed(tmp_path, sources):
    out = tmp_path / "w.lmdb"
    prepare_dataset(sources["folder"], out, sizes=16, workers=0, progress=False)
    with pytest.raises(ConfigError, match=r"different sizes, filter"):
        prepare_dataset(sources["folder"], out, sizes=24, filter="box", workers=0, progress=False)
