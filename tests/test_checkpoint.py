"""Checkpoint format v1: round trip, atomic writes, refusal of pickles, one-line errors."""

import argparse
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import tiny_model  # noqa: F401
from natgan import checkpoint, recipe
from natgan.errors import CheckpointError
from natgan.models import create


def make(tmp_path):
    r = recipe.from_dict({"model": {"name": "_tiny_test"}, "train": {"batch": 4}})
    pair = create("_tiny_test")
    opt = torch.optim.Adam(pair.generator.parameters(), lr=1e-3)
    pair.generator(torch.randn(2, 8)).sum().backward()
    opt.step()
    ck = checkpoint.make_checkpoint(
        model_name="_tiny_test", model_config={"resolution": 8, "z_dim": 8, "width": 16}, recipe=r.to_dict(),
        normalization="symmetric", G=pair.generator.state_dict(), G_ema=pair.generator.state_dict(),
        D=pair.discriminator.state_dict(), optim={"G": opt.state_dict()}, step=7, images_seen=28,
        rng={"torch": torch.get_rng_state()}, metrics=[{"step": 7, "fid": 12.5}])
    return ck, pair


def test_round_trip_identical(tmp_path):
    ck, pair = make(tmp_path)
    path = checkpoint.save(ck, tmp_path / "a.pt")
    back = checkpoint.load(path)
    assert back["recipe"] == ck["recipe"]
    assert back["progress"] == {"step": 7, "images_seen": 28}
    for name in ("G", "G_ema", "D"):
        for key, value in ck["weights"][name].items():
            assert torch.equal(back["weights"][name][key], value), key
    assert torch.equal(back["optim"]["G"]["state"][0]["exp_avg"], ck["optim"]["G"]["state"][0]["exp_avg"])
    assert back["metrics"] == [{"step": 7, "fid": 12.5}]
    # weights_only loading works on the raw file, independently of our loader
    torch.load(path, weights_only=True)
    G = checkpoint.build_generator(back)
    z = torch.randn(3, 8)
    assert torch.equal(G(z), pair.generator.eval()(z))


def test_interrupted_write_leaves_no_file(tmp_path):
    """A writer killed mid-save leaves nothing under the final name (only a temp file, never valid)."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from natgan import checkpoint
        real_save = torch.save
        def dying_save(obj, fh, *a, **k):
            fh.write(b"PK\\x03\\x04partial")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        checkpoint.atomic_save({{"x": torch.zeros(3)}}, {str(tmp_path / 'final.pt')!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert not (tmp_path / "final.pt").exists()


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    ck, _ = make(tmp_path)
    path = checkpoint.save(ck, tmp_path / "a.pt")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save(ck, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_truncated_file_is_reported(tmp_path):
    ck, _ = make(tmp_path)
    path = checkpoint.save(ck, tmp_path / "a.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"a.pt: truncated or corrupt checkpoint"):
        checkpoint.load(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        checkpoint.load(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"some": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"x.pt: not a nat-gan checkpoint$"):
        checkpoint.load(path)
    path.write_text("hello, I am text")
    with pytest.raises(CheckpointError, match=r"x.pt: not a checkpoint"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_unknown_format_version(tmp_path):
    ck, _ = make(tmp_path)
    ck["format_version"] = 99
    path = tmp_path / "v99.pt"
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format version 99"):
        checkpoint.load(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_custom_class_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "nat-gan-checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: refused to load: the file contains pickled Python objects"):
        checkpoint.load(path)
    ns = tmp_path / "official.pt"
    torch.save({"g_ema": {}, "args": argparse.Namespace(size=256)}, ns)
    with pytest.raises(CheckpointError, match="refused to load"):
        checkpoint.load(ns)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        checkpoint.load(plain)
