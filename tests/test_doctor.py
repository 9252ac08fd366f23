"""`nat-gan doctor`: every row present, real backend runs, and exit 1 with a fix when a needed check fails."""

import json

import pytest
import torch

from natgan import doctor
from natgan.cli import main
from natgan.metrics.weights import PYTORCH_FID, TORCHSCRIPT


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """No Inception file anywhere the doctor looks; cache and torch.hub inside tmp_path."""
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("NATGAN_INCEPTION", raising=False)
    monkeypatch.delenv("NATGAN_OFFLINE", raising=False)
    monkeypatch.setattr(type(TORCHSCRIPT), "tool_location", lambda self: tmp_path / "nowhere" / self.filename)
    return tmp_path


def _rows(report):
    return {(c["group"], c["name"]): c for c in report["checks"]}


def test_doctor_json_reports_versions_backends_weights_and_dirs(capsys, isolated):
    code, out, _ = run(capsys, "doctor", "--json", "--device", "cpu", "--run-dir", str(isolated / "runs"))
    report = json.loads(out)
    rows = _rows(report)
    assert code == 0 and report["ok"] is True and report["blocking"] == []
    assert rows[("versions", "torch")]["detail"].startswith(torch.__version__)
    for dist in ("python", "triton", "natten", "clean-fid", "pyspng", "lmdb"):
        assert ("versions", dist) in rows
    torch_row = rows[("attention", "torch on cpu")]
    assert torch_row["status"] == "ok" and "forward + backward, RPB" in torch_row["detail"]
    assert float(torch_row["detail"].rsplit(" ", 1)[1]) < doctor.NA_TOLERANCE
    for mode in doctor.FID_MODES:  # not found, but online: a warning with the place to put the file
        row = rows[("fid", f"Inception for {mode}")]
        assert row["status"] == "warn" and str(isolated / "cache" / "weights") in row["fix"]
    assert rows[("dirs", "runs")]["status"] == "ok"
    assert not (isolated / "runs").exists(), "the doctor must not create directories"


def test_doctor_offline_without_weights_exits_1_with_the_fix(capsys, isolated, monkeypatch):
    monkeypatch.setenv("NATGAN_OFFLINE", "1")
    weights = isolated / "weights"
    weights.mkdir()
    (weights / PYTORCH_FID.filename).write_bytes(b"\x80\x02N.")  # a (tiny) pickle: present and not truncated
    monkeypatch.setenv("NATGAN_INCEPTION", str(weights))
    code, out, _ = run(capsys, "doctor", "--json", "--no-attention", "--run-dir", str(isolated / "runs"))
    report = json.loads(out)
    rows = _rows(report)
    assert code == 1 and report["ok"] is False
    assert rows[("fid", "Inception for legacy_pytorch")]["status"] == "ok"
    assert "fid/Inception for clean" in report["blocking"]
    assert TORCHSCRIPT.filename in rows[("fid", "Inception for clean")]["detail"]


def test_doctor_table_names_an_unwritable_cache_and_exits_1(capsys, isolated, monkeypatch):
    blocker = isolated / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(blocker / "cache"))
    code, out, _ = run(capsys, "doctor", "--no-attention", "--run-dir", str(isolated))
    assert code == 1
    assert "needed checks failed: dirs/cache" in out and "NATGAN_CACHE_DIR" in out


def test_a_crashing_backend_is_a_failed_needed_row(monkeypatch):
    import natgan.ops.dispatch as dispatch

    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(dispatch, "na2d_torch", broken)
    row = doctor.na_backend_check("torch", torch.device("cpu"))
    assert row.status == "fail" and row.blocking and row.detail == "RuntimeError: kernel exploded"


def test_a_wrong_backend_is_caught_by_the_comparison(monkeypatch):
    import natgan.ops.dispatch as dispatch

    real = dispatch.na2d_torch
    monkeypatch.setattr(dispatch, "na2d_torch", lambda q, *a: real(q, *a) * (1.01 if q.dtype == torch.float32 else 1))
    row = doctor.na_backend_check("torch", torch.device("cpu"))
    assert row.status == "fail" and "disagrees" in row.fix


def test_missing_required_package_is_blocking(monkeypatch):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda dist: None if dist == "lmdb" else real(dist))
    rows = {r.name: r for r in doctor.check_versions()}
    assert rows["lmdb"].blocking and rows["lmdb"].fix == "pip install lmdb"
    monkeypatch.setattr(doctor, "_version", lambda dist: None if dist == "natten" else real(dist))
    rows = {r.name: r for r in doctor.check_versions()}
    assert rows["natten"].status == "warn" and not rows["natten"].blocking
