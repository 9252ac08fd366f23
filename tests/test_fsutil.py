"""The one atomic-write helper every writer uses: complete-or-absent files, no temp files left behind."""

import os
import subprocess
import sys

import pytest

from natgan import checkpoint
from natgan.fsutil import AtomicFile, atomic_write, atomic_write_text, remove_stale_temps, temp_path
from natgan.train.rundir import RunDir


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_commit_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_stale_temps_of_dead_pids_are_removed_live_ones_kept(tmp_path):
    dead = temp_path(tmp_path / "ckpt-0000002.pt", pid=dead_pid())
    live = temp_path(tmp_path / "ckpt-0000003.pt", pid=os.getppid())
    other = tmp_path / "notes.tmp-1"
    for p in (dead, live, other):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [dead]
    assert live.exists() and other.exists() and not dead.exists()


def test_next_writer_of_the_same_target_removes_its_stale_temp(tmp_path):
    stale = temp_path(tmp_path / "x.pt", pid=dead_pid())
    stale.write_bytes(b"torn")
    with AtomicFile(tmp_path / "x.pt") as fh:
        fh.write(b"ok")
    assert not stale.exists() and (tmp_path / "x.pt").read_bytes() == b"ok"


def test_run_dir_lock_cleans_temps_left_by_a_killed_checkpoint_write(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    stale = temp_path(run.checkpoint_path(4), pid=dead_pid())
    stale.write_bytes(b"PK\x03\x04 torn checkpoint")
    run.lock()
    try:
        assert not stale.exists()
    finally:
        run.unlock()


def test_checkpoint_save_uses_the_helper(tmp_path, monkeypatch):
    calls = []
    import natgan.checkpoint as ck_module

    real = ck_module.atomic_write
    monkeypatch.setattr(ck_module, "atomic_write", lambda path, write: calls.append(path) or real(path, write))
    checkpoint.atomic_save({"x": 1}, tmp_path / "c.pt")
    assert calls == [tmp_path / "c.pt"]
