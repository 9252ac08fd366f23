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
    monkeypatch.setattr(doctor, "probe_hosts", lambda hosts: (True, "simulated network"))
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


# ------------------------------------------------------------------------------ weights, downloads, load


def test_offline_the_vgg16_and_lpips_files_are_needed_failures(capsys, isolated, monkeypatch):
    """`fid --metrics pr` and `project` cannot run without them: the doctor must not report success."""
    monkeypatch.setenv("NATGAN_OFFLINE", "1")
    code, out, _ = run(capsys, "doctor", "--json", "--no-attention", "--run-dir", str(isolated / "runs"))
    rows = _rows(json.loads(out))
    assert code == 1
    assert rows[("weights", "downloads")]["detail"] == "impossible: NATGAN_OFFLINE is set"
    for name, needs in (("vgg16-397923af.pth", "pr, dc"), ("vgg.pth", "ppl, project")):
        row = rows[("weights", name)]
        assert row["status"] == "fail" and row["required"] and "no download (NATGAN_OFFLINE is set)" in row["detail"]
        assert needs in row["detail"] and "cannot run" in row["detail"] and "https://" in row["fix"]
    assert f"weights/{TORCHSCRIPT.filename}" not in json.loads(out)["blocking"]  # blocks as fid/Inception rows


def test_without_network_downloads_are_impossible_and_said_so(capsys, isolated, monkeypatch):
    monkeypatch.undo()  # the real probe; the test session refuses every non-loopback connection
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(isolated / "cache"))
    monkeypatch.delenv("NATGAN_OFFLINE", raising=False)
    monkeypatch.setattr(type(TORCHSCRIPT), "tool_location", lambda self: isolated / "nowhere" / self.filename)
    possible, why = doctor.download_status()
    assert not possible and why.startswith("no network (") and "download.pytorch.org" in why
    checks = doctor.check_inception((possible, why)) + doctor.check_weight_files(None, (possible, why))
    rows = {r.name: r for r in checks}
    assert rows["Inception for clean"].blocking and "no download: no network" in rows["Inception for clean"].detail
    assert rows["vgg16-397923af.pth"].blocking and "no network" in rows["vgg16-397923af.pth"].detail
    assert "downloaded on first use" not in " ".join(r.detail for r in rows.values())
    assert doctor.download_check((possible, why)).detail.startswith("impossible: no network")


def test_found_weights_are_checked_and_online_missing_ones_are_fetched_later(isolated):
    weights = isolated / "w"
    weights.mkdir()
    (weights / "vgg16-397923af.pth").write_bytes(b"x")
    rows = {r.name: r for r in doctor.check_weight_files(weights, (True, "simulated"))}
    vgg = rows["vgg16-397923af.pth"]  # found (its digest is wrong: that is the digest check's business)
    assert vgg.status != "skip" and str(weights) in vgg.detail
    lpips = rows["vgg.pth"]
    assert lpips.status == "skip" and not lpips.blocking and "downloaded on first use by ppl, project" in lpips.detail


def test_weights_option_lists_every_file_with_url_and_where_found(capsys, isolated):
    from natgan.metrics.weights import USES, WEIGHTS

    weights = isolated / "w"
    weights.mkdir()
    (weights / "vgg.pth").write_bytes(b"x")
    code, out, _ = run(capsys, "doctor", "--json", "--no-attention", "--weights", str(weights), "--run-dir",
                       str(isolated / "runs"))
    files = json.loads(out)["weights"]
    assert [f["needed by"] for f in files] == [needs for needs, names in USES for _ in names]
    assert {f["file"] for f in files} == {w.filename for w in WEIGHTS.values()}
    for f in files:
        assert f["url"].startswith("https://") and f["url"].endswith(f["file"])
        assert f["found"] == (str(weights / "vgg.pth") if f["file"] == "vgg.pth" else None)
    code, out, _ = run(capsys, "doctor", "--no-attention", "--weights", str(weights), "--run-dir",
                       str(isolated / "runs"))
    assert "weights files" in out and "missing" in out and "vgg.pth" in out  # (narrow console: names wrap)


def test_readme_weights_table_matches_the_code():
    """One table of the weights files in the README, from the same data the doctor lists."""
    from pathlib import Path

    from natgan.metrics.weights import USES, WEIGHTS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for needs, names in USES:
        for name in names:
            row = f"| {needs} | `{WEIGHTS[name].filename}` | {WEIGHTS[name].url} |"
            assert row in readme, row


@pytest.mark.parametrize("load, cores, status", [(1.5, 2, "ok"), (2.0, 2, "ok"), (3.2, 2, "warn"), (9.0, 8, "warn")])
def test_load_above_the_cores_is_a_warning_with_what_to_do(load, cores, status):
    row = doctor.check_load(load, cores)
    assert row.status == status and not row.blocking and f"{load:.1f}" in row.detail
    if status == "warn":
        assert "--threads 1" in row.fix and "NATGAN_THREADS=1" in row.fix
