"""Issue 23: no file a user is handed may run code or write anywhere.

Every test is built the way an attacker would build the attack (a real TorchScript file whose scripted
``__setstate__`` creates a marker file on load; a file planted in a world-writable stand-in for ``/tmp``;
hostile names in data files; outputs aimed at inputs through ``..`` and symlinks; special files; damaged
and zip-bomb archives) and asserts what a victim needs: nothing ran (no marker), nothing outside the output
folder changed, a non-zero exit with one ``error:`` line.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import tiny_model  # noqa: F401  (registers "_tiny_test")
from natgan.errors import NatGanError
from natgan.metrics import weights as weights_mod
from natgan.metrics.weight_files import LPIPS_VGG, PYTORCH_FID, TORCHSCRIPT, VGG16, WEIGHTS
from test_sample import run_cli

# --------------------------------------------------------------------------------------------- helpers


class _Payload(nn.Module):
    """Runs ``torch.from_file(marker, shared=True)`` - which creates the file - when TorchScript restores it."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.size = 0

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool, int]:
        return (self.marker, self.training, self.size)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool, int]) -> None:
        self.marker = state[0]
        self.training = state[1]
        self.size = torch.from_file(self.marker, True, 8).numel()  # used, so the script keeps the call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _EvilInception(nn.Module):
    """Looks like clean-fid's TorchScript Inception (``layers``, features out) and carries the payload."""

    def __init__(self, marker: str):
        super().__init__()
        self.payload = _Payload(marker)
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 2048, 1))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(self.payload(x)).flatten(1)


def evil_torchscript(path: Path, marker: Path) -> Path:
    """A TorchScript file that creates ``marker`` when ``torch.jit.load`` reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_EvilInception(str(marker))).save(str(path))
    return path


def one_error_line(err: str, *, alone: bool = True) -> str:
    """The single ``error:`` line (``alone``: and nothing else on stderr; train reports progress there)."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and (len(lines) == 1 or not alone), err
    assert "Traceback" not in err
    return errors[0]


def tree_state(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under ``root`` (but ``skip``) with its type, mode and content hash: what must not change."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath).resolve().is_relative_to(skip.resolve()):
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            state[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), digest, link)
    return state


def image_folder(path: Path, n: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path / f"{i:04d}.png")
    return path


@pytest.fixture()
def machine(tmp_path, monkeypatch):
    """A user's machine: private cache, no network, and a world-writable stand-in for the shared /tmp."""
    shared_tmp = tmp_path / "shared-tmp"
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)  # what /tmp is: anybody may create files in it
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("NATGAN_OFFLINE", "1")
    for var in ("NATGAN_INCEPTION", "NATGAN_WEIGHTS", "NATGAN_TRUST_TORCHSCRIPT", "NATGAN_UNOFFICIAL_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(weights_mod.WeightsFile, "tool_location",
                        lambda self: (shared_tmp if self.kind == "torchscript" else tmp_path / "hub") / self.filename)
    monkeypatch.setattr(weights_mod, "download", lambda *a, **k: pytest.fail("tried to download"))
    return shared_tmp


# ------------------------------------------------------------------------- 1, 2: TorchScript weights


@pytest.mark.parametrize("way", ["--inception FILE", "--inception DIR", "NATGAN_INCEPTION", "--weights DIR",
                                 "NATGAN_WEIGHTS", "cache", "shared /tmp"])
@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_a_scripted_inception_never_runs_however_it_is_found(tmp_path, machine, monkeypatch, capsys, way, mode):
    marker = tmp_path / "PWNED"
    folder = {"cache": tmp_path / "cache" / "weights", "shared /tmp": machine}.get(way, tmp_path / "downloads")
    evil = evil_torchscript(folder / TORCHSCRIPT.filename, marker)
    a, b = image_folder(tmp_path / "a", seed=1), image_folder(tmp_path / "b", seed=2)
    argv = ["fid", str(a), str(b), "--mode", mode, "--workers", "0", "-q", "--device", "cpu"]
    if way == "--inception FILE":
        argv += ["--inception", str(evil)]
    elif way == "--inception DIR":
        argv += ["--inception", str(folder)]
    elif way == "--weights DIR":
        argv += ["--weights", str(folder)]
    elif way in ("NATGAN_INCEPTION", "NATGAN_WEIGHTS"):
        monkeypatch.setenv(way, str(folder))
    before = tree_state(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert not marker.exists(), "the TorchScript payload ran"
    line = one_error_line(err)
    assert code == 1
    if way == "shared /tmp":  # never even considered: the file is where anybody could have put it
        assert "no Inception weights" in line and f"{evil} ignored: others can write there" in line
    else:
        assert f"{evil}: refused before loading: sha256 " in line and TORCHSCRIPT.sha256 in line
    assert tree_state(tmp_path) == before


def test_a_scripted_inception_in_a_training_run_never_runs(tmp_path, machine, monkeypatch, capsys):
    from test_train import tiny_recipe

    from natgan.data import prepare_digits

    data = tmp_path / "digits8.lmdb"
    prepare_digits(data, sizes=[8], progress=False)
    marker = tmp_path / "PWNED"
    evil_torchscript(tmp_path / "weights" / TORCHSCRIPT.filename, marker)
    monkeypatch.setenv("NATGAN_WEIGHTS", str(tmp_path / "weights"))
    recipe = tiny_recipe(tmp_path, str(data), iterations=2, lr_decay_start=2, checkpoint_every=2,
                         sample_every=2)
    code, _, err = run_cli(["train", "--recipe", str(recipe), "--outdir", str(tmp_path / "run"), "--no-progress",
                            "--set", "eval.every=2", "--set", 'eval.mode="clean"', "--set", "eval.num=4"], capsys)
    assert not marker.exists(), "the TorchScript payload ran"
    assert code == 1 and "refused before loading" in one_error_line(err, alone=False)


def test_the_user_can_trust_a_torchscript_file_by_name_and_the_protocol_records_its_digest(tmp_path, machine,
                                                                                          monkeypatch):
    """The explicit risk option loads exactly the named file (and would run its code: the user asked)."""
    from natgan.metrics import build_inception

    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "mine" / TORCHSCRIPT.filename, marker)
    other = evil_torchscript(tmp_path / "other" / TORCHSCRIPT.filename, tmp_path / "other-ran")
    with pytest.raises(NatGanError, match="refused before loading"):
        build_inception("clean", inception=other, trust_torchscript=evil)  # trust names a file, not a folder
    assert not (tmp_path / "other-ran").exists()
    ext = build_inception("clean", inception=evil, trust_torchscript=evil)
    assert marker.exists()  # proof that the payload is real: it runs when (and only when) the user says so
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    assert f"weights sha256 {digest} (NOT the official file)" in ext.protocol


def test_official_digests_are_full_sha256_and_torch_hub_names_carry_their_prefix():
    for spec in WEIGHTS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
    for spec in (PYTORCH_FID, VGG16):  # torch.hub convention: the file name holds the first digits
        assert spec.filename.rsplit("-", 1)[1].split(".")[0] == spec.sha256[:8]
    assert {TORCHSCRIPT.kind, LPIPS_VGG.kind} == {"torchscript", "pytorch"}


def test_a_state_dict_with_another_digest_is_refused_before_torch_load(tmp_path, machine, monkeypatch):
    from natgan.metrics.lpips import load_lpips

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / VGG16.filename).write_bytes(b"anything")
    (weights / LPIPS_VGG.filename).write_bytes(b"anything")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load saw an unverified file"))
    with pytest.raises(NatGanError, match=f"{VGG16.filename}: refused: sha256 [0-9a-f]{{64}} is not the official "
                                          f"{VGG16.filename}'s {VGG16.sha256}"):
        load_lpips(weights)


def test_weights_are_only_picked_up_from_places_nobody_else_can_write(tmp_path, machine, monkeypatch):
    planted = machine / TORCHSCRIPT.filename
    planted.write_bytes(b"planted")
    assert weights_mod.find("inception-torchscript") is None  # world-writable folder: ignored
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    (private / TORCHSCRIPT.filename).write_bytes(b"mine")
    monkeypatch.setattr(weights_mod.WeightsFile, "tool_location", lambda self: private / self.filename)
    assert weights_mod.find("inception-torchscript") == private / TORCHSCRIPT.filename
    (private / TORCHSCRIPT.filename).chmod(0o666)  # the file itself writable by others
    assert weights_mod.find("inception-torchscript") is None


def test_doctor_reports_each_weight_file_and_flags_locations_others_can_write(tmp_path, machine, monkeypatch):
    from natgan import doctor

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / VGG16.filename).write_bytes(b"not the official file")
    monkeypatch.setenv("NATGAN_WEIGHTS", str(weights))
    rows = {r.name: r for r in doctor.check_weight_files()}
    assert rows[VGG16.filename].status == doctor.FAIL and rows[VGG16.filename].detail.startswith("unknown:")
    assert rows[VGG16.filename].required is False
    assert rows[LPIPS_VGG.filename].detail.startswith("missing")
    official = doctor.weight_file_status("lpips-vgg", weights / "fake")
    assert official.status == doctor.FAIL  # a missing path is reported, not raised
    flagged = {r.name: r for r in doctor.check_weight_locations()}
    assert f"location {machine}" in flagged and "never loads weights" in flagged[f"location {machine}"].detail
    weights.chmod(0o777)
    flagged = {r.name: r for r in doctor.check_weight_locations()}
    assert "anyone may swap" in flagged[f"location {weights}"].detail


# ------------------------------------------------------------------- 3: names stored in a latents file


def hostile_latents(path: Path, names: list[str], w_dim: int = 16) -> Path:
    """A latents file as anyone can write it with numpy: ``w`` plus the ``names`` that pick file names."""
    np.savez(path, w=np.zeros((len(names), w_dim), np.float32), space=np.array("w"), names=np.array(names),
             model=np.array("stylegan2"))
    return path


@pytest.fixture()
def sg2_ckpt(tmp_path):
    from test_latent_cli import family_checkpoint

    path = tmp_path / "in" / "model.pt"
    path.parent.mkdir()
    family_checkpoint("stylegan2", path)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nul", "empty"])
def test_names_in_a_latents_file_never_choose_where_outputs_go(tmp_path, sg2_ckpt, capsys, kind):
    victim = tmp_path / "victim" / "existing.png"
    victim.parent.mkdir()
    victim.write_bytes(b"the user's file")
    name = {"dotdot": "../victim/existing", "absolute": str(victim.with_suffix("")), "nul": "a\x00b",
            "empty": ""}[kind]
    latents = hostile_latents(tmp_path / "in" / "w.npz", ["fine", name])
    out = tmp_path / "out"
    before = tree_state(tmp_path, skip=out)
    code, _, err = run_cli(["sample", "--ckpt", str(sg2_ckpt), "--w", str(latents), "--outdir", str(out), "-q",
                            "--device", "cpu"], capsys)
    assert victim.read_bytes() == b"the user's file"
    assert tree_state(tmp_path, skip=out) == before  # nothing outside --outdir changed
    line = one_error_line(err)
    assert code != 0 and f"{latents}: names[1]" in line
    assert not out.exists() or not any(out.iterdir())  # refused when the file is read: nothing written


def test_plain_names_and_outputs_inside_the_folder(tmp_path):
    from natgan.errors import NatGanError as Err
    from natgan.fsutil import output_in, plain_name

    assert plain_name("seed0001", "x") == "seed0001" and plain_name("a b-ü", "x") == "a b-ü"
    for bad in ("..", ".", "a/b", "a\\b", "/etc/passwd", "x\x00", "x\n", "", ".hidden", "x" * 201):
        with pytest.raises(Err, match="src: name"):
            plain_name(bad, "src")
    assert output_in(tmp_path, "a.png") == tmp_path / "a.png"


# ------------------------------------------------------------------------------- 4: outputs over inputs


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_directions_never_overwrite_the_checkpoint_they_read(tmp_path, sg2_ckpt, capsys, spelling):
    (tmp_path / "in" / "sub").mkdir()
    out = {"same": sg2_ckpt, "dotdot": tmp_path / "in" / "sub" / ".." / sg2_ckpt.name,
           "symlink": tmp_path / "in" / "link.npz", "hardlink": tmp_path / "in" / "hard.npz"}[spelling]
    if spelling == "symlink":
        out.symlink_to(sg2_ckpt)
    elif spelling == "hardlink":
        os.link(sg2_ckpt, out)
    before = tree_state(tmp_path)
    code, _, err = run_cli(["directions", "--ckpt", str(sg2_ckpt), "--out", str(out)], capsys)
    assert tree_state(tmp_path) == before
    line = one_error_line(err)
    assert code == 2 and f"--out {out}: is the input --ckpt" in line


def test_project_never_overwrites_its_own_target(tmp_path, sg2_ckpt, capsys):
    work = tmp_path / "work"
    target = work / "target" / "target.png"
    target.parent.mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(target)
    before = tree_state(tmp_path)
    code, _, err = run_cli(["project", "--ckpt", str(sg2_ckpt), "--target", str(target), "--outdir", str(work),
                            "--steps", "2", "--random-lpips", "--w-avg-samples", "16", "-q", "--device", "cpu"],
                           capsys)
    assert tree_state(tmp_path) == before
    assert code == 2 and f"is the input --target {target}" in one_error_line(err)


def test_sample_never_writes_through_a_symlink_in_the_output_folder(tmp_path, sg2_ckpt, capsys):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"the user's file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "seed0000.png").symlink_to(victim)
    before = tree_state(tmp_path)
    code, _, err = run_cli(["sample", "--ckpt", str(sg2_ckpt), "--seeds", "0-1", "--outdir", str(out), "-q",
                            "--device", "cpu"], capsys)
    assert victim.read_bytes() == b"the user's file" and (out / "seed0000.png").is_symlink()
    assert tree_state(tmp_path) == before
    assert code == 2 and "seed0000.png: is a symbolic link" in one_error_line(err)


# ------------------------------------------------------------------------- 5: writers and special files


def special(path: Path, kind: str) -> Path:
    """A FIFO, a character device (a private /dev/null twin: needs root's CAP_MKNOD), or a 0444 file."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs CAP_MKNOD (the FIFO and read-only cases still run)")
    else:
        path.write_bytes(b"protected by its owner")
        path.chmod(0o444)
    return path


EXPECTED = {"fifo": "is a FIFO, not a regular file", "device": "is a character device, not a regular file",
            "readonly": "is read-only (mode 0444)"}


@pytest.mark.parametrize("kind", ["fifo", "device", "readonly"])
def test_directions_out_is_never_a_special_or_protected_file(tmp_path, sg2_ckpt, capsys, kind):
    target = special(tmp_path / "target", kind)
    before = tree_state(tmp_path)
    code, _, err = run_cli(["directions", "--ckpt", str(sg2_ckpt), "--out", str(target)], capsys)
    assert tree_state(tmp_path) == before
    assert code == 2 and f"--out {target}: {EXPECTED[kind]}" in one_error_line(err)


@pytest.mark.parametrize("kind", ["fifo", "readonly"])
def test_bench_output_is_never_a_special_or_protected_file(tmp_path, capsys, kind):
    target = special(tmp_path / "bench.json", kind)
    before = tree_state(tmp_path)
    code, _, err = run_cli(["bench", "--model", "stylegan2", "--set", "model.channel_max=16", "--resolution", "16",
                            "--batch", "1", "--warmup", "0", "--rounds", "1", "--no-flops", "--device", "cpu",
                            "--output", str(target)], capsys)
    assert tree_state(tmp_path) == before
    assert code == 2 and f"--output {target}: {EXPECTED[kind]}" in one_error_line(err, alone=False)


@pytest.mark.parametrize("kind", ["fifo", "readonly"])
def test_import_out_is_never_a_special_or_protected_file(tmp_path, capsys, kind):
    source = Path(__file__).resolve().parent / "fixtures" / "official" / "rosinality" / "converted.pt"
    target = special(tmp_path / "imported.pt", kind)
    before = tree_state(tmp_path)
    code, _, err = run_cli(["import", str(source), "--from", "rosinality", "--out", str(target), "--overwrite"],
                           capsys)
    assert tree_state(tmp_path) == before
    assert code == 2 and f"--out {target}: {EXPECTED[kind]}" in one_error_line(err)


def test_a_training_log_is_never_appended_through_a_link(tmp_path, capsys, monkeypatch):
    from natgan.train.display import Display

    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    (tmp_path / "log.txt").symlink_to(victim)
    display = Display.__new__(Display)
    display.log_file, display._log_checked = tmp_path / "log.txt", False
    with pytest.raises(NatGanError, match="log.txt: is a symbolic link"):
        display.write_log("step 1")
    assert victim.read_text() == "the user's file\n"


# ------------------------------------------------------------------------- 6: damaged and inflated zips

ROSINALITY = Path(__file__).resolve().parent / "fixtures" / "official" / "rosinality" / "converted.pt"
BOMB_BYTES = 512 << 20  # what the entry declares; the file itself is ~2 MB


def deflated(prefix: bytes, total: int, chunk: int = 1 << 24) -> tuple[bytes, int]:
    """A raw deflate stream of ``prefix`` + zeros up to ``total`` bytes, built in blocks (no 512 MB buffer)."""
    co = zlib.compressobj(1, zlib.DEFLATED, -15)
    head = co.compress(prefix) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(bytes(chunk)) + co.flush(zlib.Z_FULL_FLUSH)
    n = (total - len(prefix)) // chunk
    crc = zlib.crc32(prefix)
    for _ in range(n):
        crc = zlib.crc32(bytes(chunk), crc)
    return head + block * n + b"\x03\x00", crc  # 0x03 0x00: the final, empty block


def bomb_zip(files: dict[str, bytes], name: str, total: int, prefix: bytes = b"") -> bytes:
    """A valid zip in which entry ``name`` inflates to ``total`` bytes (CRC correct: only its size is hostile)."""
    data, crc = deflated(prefix, total)
    n = len(prefix) + (total - len(prefix)) // (1 << 24) * (1 << 24)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for entry, content in files.items():
            zf.writestr(zipfile.ZipInfo(entry), data if entry == name else content)
        offset = zf.getinfo(name).header_offset
    raw = bytearray(buf.getvalue())
    struct.pack_into("<HHHIII", raw, offset + 8, 8, 0, 0x21, crc, len(data), n)  # deflated, crc, sizes
    pos = raw.find(b"PK\x01\x02")
    while pos != -1:  # the central directory says the same
        length = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46:pos + 46 + length].decode() == name:
            struct.pack_into("<H", raw, pos + 10, 8)
            struct.pack_into("<III", raw, pos + 16, crc, len(data), n)
        pos = raw.find(b"PK\x01\x02", pos + 4)
    return bytes(raw)


@pytest.fixture(scope="module")
def bomb_checkpoint_bytes():
    """A torch checkpoint whose tensor entry declares 512 MB in ~2 MB: torch.load would allocate it all."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    with zipfile.ZipFile(buf) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    name = next(n for n in files if n.endswith("/data/0"))
    return bomb_zip(files, name, BOMB_BYTES)


class _NestedStorage:
    """How NVlabs pickles carry tensors: ``torch.storage._load_from_bytes(<a torch.save file>)``."""

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        from torch.storage import _load_from_bytes

        return _load_from_bytes, (self.data,)


def test_a_flipped_byte_in_a_rosinality_file_is_refused_by_import(tmp_path, capsys):
    from test_reliability import flip_byte_in_entry

    damaged = tmp_path / "000000.pt"
    shutil.copyfile(ROSINALITY, damaged)
    entry = flip_byte_in_entry(damaged, "/data/0")
    code, _, err = run_cli(["import", str(damaged), "--from", "rosinality", "--out", str(tmp_path / "out.pt")],
                           capsys)
    assert not (tmp_path / "out.pt").exists()
    assert code == 1 and f"entry '{entry}' fails its CRC check" in one_error_line(err)


@pytest.mark.parametrize("command", ["sample", "import", "train --resume", "import nvlabs", "sample --w"])
def test_a_zip_bomb_is_refused_before_anything_is_decompressed(tmp_path, capsys, bomb_checkpoint_bytes, command,
                                                               monkeypatch):
    bomb = tmp_path / "bomb.pt"
    bomb.write_bytes(bomb_checkpoint_bytes)
    out = tmp_path / "out"
    if command == "sample":
        argv = ["sample", "--ckpt", str(bomb), "--outdir", str(out), "-q"]
    elif command == "import":
        argv = ["import", str(bomb), "--from", "rosinality", "--out", str(out / "x.pt")]
    elif command == "import nvlabs":
        nvlabs = tmp_path / "network-snapshot-000000.pkl"
        nvlabs.write_bytes(pickle.dumps({"G_ema": _NestedStorage(bomb_checkpoint_bytes)}))
        argv = ["import", str(nvlabs), "--from", "stylegan2-ada", "--out", str(out / "x.pt")]
    elif command == "sample --w":
        from test_latent_cli import family_checkpoint

        family_checkpoint("stylegan2", tmp_path / "model.pt")
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (BOMB_BYTES // 64, 16)})
        latents = tmp_path / "w.npz"
        latents.write_bytes(bomb_zip({"w.npy": b""}, "w.npy", BOMB_BYTES, prefix=header.getvalue()))
        argv = ["sample", "--ckpt", str(tmp_path / "model.pt"), "--w", str(latents), "--outdir", str(out), "-q"]
        bomb = latents
    else:
        from test_train import tiny_recipe

        argv = ["train", "--recipe", str(tiny_recipe(tmp_path, str(tmp_path / "no-data.lmdb"))), "--outdir",
                str(out), "--resume", str(bomb), "--no-progress"]
    raised = []

    def refuse(*args, **kwargs):
        raised.append(args)
        raise AssertionError("a loader reached the unchecked container")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)
    code, _, err = run_cli(argv, capsys)
    assert not raised, "the loader was handed the zip bomb"
    line = one_error_line(err, alone=command != "train --resume")
    assert code == 1 and "declares" in line and "zip bomb" in line
    assert not out.exists() or not any(out.rglob("*.pt"))


def legacy_bomb() -> bytes:
    """torch's legacy (non-zip) format with one storage whose declared length is patched to 2**31 - 1 floats:
    a 500-byte file for which torch.load allocates 8 GiB (found by the attack pass; no CRC to catch it)."""
    import argparse

    buf = io.BytesIO()
    torch.save({"args": argparse.Namespace(size=8), "g_ema": {"w": torch.zeros(4321)}}, buf,
               _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    numel = struct.pack("<BH", ord("M"), 4321)  # BININT2 4321, right after the location 'cpu'
    at = raw.index(numel, raw.index(b"cpu"))
    return raw[:at] + b"J" + struct.pack("<i", 2**31 - 1) + raw[at + 3:]


@pytest.mark.parametrize("route", ["checkpoint", "import", "nested"])
def test_a_legacy_format_allocation_bomb_is_refused_before_torch_load(tmp_path, monkeypatch, route):
    from natgan import checkpoint
    from natgan.importers import import_checkpoint
    from natgan.importers.nvlabs_pickle import read_pickle

    data = legacy_bomb()
    path = tmp_path / ("network-snapshot-000000.pkl" if route == "nested" else "bomb.pt")
    path.write_bytes(pickle.dumps({"G_ema": _NestedStorage(data)}) if route == "nested" else data)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached the allocation bomb"))
    with pytest.raises(NatGanError, match=r"declares 8,589,934,588 bytes of tensor data in a [0-9,]+-byte file"):
        {"checkpoint": checkpoint.load, "import": lambda p: import_checkpoint(p, "rosinality"),
         "nested": read_pickle}[route](path)


def test_an_honest_legacy_file_passes_the_size_scan(tmp_path):
    """The scanner understands what official legacy files hold (Namespace via NEWOBJ, parameters, dicts)."""
    import argparse

    from natgan.archive import _SizeScanner, check_torch_file

    buf = io.BytesIO()
    torch.save({"args": argparse.Namespace(size=8), "g": {"w": nn.Parameter(torch.zeros(64, 3))}}, buf,
               _use_new_zipfile_serialization=False)
    check_torch_file(buf.getvalue())
    buf.seek(0)
    scanner = _SizeScanner(buf)
    for _ in range(4):
        scanner.load()
    assert sum(scanner.storage_bytes.values()) == 64 * 3 * 4


def test_doctor_calls_the_official_file_official(tmp_path, machine, monkeypatch):
    from natgan import doctor
    from natgan.metrics import weight_files

    stand_in = tmp_path / "vgg.pth"
    stand_in.write_bytes(b"the published bytes, in this test")
    digest = hashlib.sha256(stand_in.read_bytes()).hexdigest()
    spec = weight_files.WeightsFile("pytorch", "vgg.pth", LPIPS_VGG.url, digest)
    monkeypatch.setitem(weight_files.WEIGHTS, "lpips-vgg", spec)
    row = doctor.weight_file_status("lpips-vgg", stand_in)
    assert row.status == doctor.OK and row.detail.startswith("official (sha256 ")


def test_protected_inputs_last_for_one_command_only(tmp_path, sg2_ckpt, capsys):
    from natgan.fsutil import atomic_write_bytes

    code, _, _ = run_cli(["directions", "--ckpt", str(sg2_ckpt), "--out", str(tmp_path / "d.npz")], capsys)
    assert code == 0
    atomic_write_bytes(sg2_ckpt, b"a later, unrelated writer may replace it")  # not protected any more


def test_a_link_planted_under_the_writer_s_temp_name_is_never_written_through(tmp_path):
    from natgan.fsutil import atomic_write_bytes, temp_path

    victim = tmp_path / "victim"
    victim.write_bytes(b"the user's file")
    target = tmp_path / "out" / "result.json"
    target.parent.mkdir()
    temp_path(target).symlink_to(victim)  # someone who can write the folder guessed the pid
    atomic_write_bytes(target, b"{}")
    assert victim.read_bytes() == b"the user's file" and target.read_bytes() == b"{}"
    assert not os.path.lexists(temp_path(target))


def test_trust_torchscript_names_one_file_for_one_command(tmp_path, machine, capsys):
    """The CLI option runs the named file (the user asked) and is forgotten when the command ends."""
    marker = tmp_path / "ran"
    evil = evil_torchscript(tmp_path / "mine" / TORCHSCRIPT.filename, marker)
    a, b = image_folder(tmp_path / "a", seed=1), image_folder(tmp_path / "b", seed=2)
    code, out, err = run_cli(["fid", str(a), str(b), "--mode", "clean", "--workers", "0", "-q", "--device", "cpu",
                              "--inception", str(evil), "--trust-torchscript", str(evil), "--json"], capsys)
    assert code == 0 and marker.exists() and "NOT the official file" in out
    assert "NATGAN_TRUST_TORCHSCRIPT" not in os.environ
