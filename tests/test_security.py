"""Issue 23: no file a user is handed may run code or write anywhere.

Every test is built the way an attacker would build the attack (a real TorchScript file whose scripted
``__setstate__`` creates a marker file on load; a file planted in a world-writable stand-in for ``/tmp``;
hostile names in data files; outputs aimed at inputs through ``..`` and symlinks; special files; damaged
and zip-bomb archives) and asserts what a victim needs: nothing ran (no marker), nothing outside the output
folder changed, a non-zero exit with one ``error:`` line.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
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
        assert "no Inception weights" in line and str(evil) not in line
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
    assert rows[LPIPS_VGG.filename].detail == "missing"
    official = doctor.weight_file_status("lpips-vgg", weights / "fake")
    assert official.status == doctor.FAIL  # a missing path is reported, not raised
    flagged = {r.name: r for r in doctor.check_weight_locations()}
    assert f"location {machine}" in flagged and "never loads weights" in flagged[f"location {machine}"].detail
    weights.chmod(0o777)
    flagged = {r.name: r for r in doctor.check_weight_locations()}
    assert "anyone may swap" in flagged[f"location {weights}"].detail
