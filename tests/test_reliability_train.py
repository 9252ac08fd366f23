"""Issue 18, training side: never start over silently, never resume one run into another's directory,
keep FID results recorded into latest.pt, and seed/resume every global RNG."""

import random

import numpy as np
import pytest
import torch

import tiny_model  # noqa: F401
from natgan import checkpoint, recipe as recipes
from natgan.errors import NatGanError
from natgan.train import Trainer, resolve_run, train
from natgan.train.rundir import RunDir, run_id_of
from test_train import digits  # noqa: F401  (the shared tiny dataset fixture)
from test_train import tiny_recipe as train_recipe


def tiny_recipe(tmp_path, digits, **train_settings):
    settings = {"iterations": 4, "lr_decay_start": 2, "bcr": False, **train_settings}
    return train_recipe(tmp_path, digits, **settings)


def run(recipe_path, outdir, resume=None, max_steps=None, start_over=False):
    r, ck, how = resolve_run(recipe_path=recipe_path, overrides=[], outdir=outdir, resume=resume,
                             start_over=start_over)
    return train(r, outdir, resume_from=ck, max_steps=max_steps, show_progress=False, start_over=start_over), how


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_resume_auto_refuses_when_no_checkpoint_loads(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits)
    outdir = tmp_path / "run"
    run(recipe_path, outdir)
    rd = RunDir(outdir)
    files = [p for _, p in rd.numbered_checkpoints()] + [rd.latest]
    assert len(files) >= 2
    # a newer format version (re-saved, so its CRCs are fine) and truncations; latest.pt is a hard link,
    # so every file is replaced (unlinked first), not rewritten in place
    ck = torch.load(files[0], weights_only=True)
    ck["format_version"] = 2
    for path in files[1:]:
        data = path.read_bytes()[: 200]
        path.unlink()
        path.write_bytes(data)
    files[0].unlink()
    torch.save(ck, files[0])
    before = snapshot(outdir)
    with pytest.raises(NatGanError) as info:
        resolve_run(recipe_path=recipe_path, overrides=[], outdir=outdir, resume="auto")
    message = str(info.value)
    assert "none loads" in message and "--overwrite" in message
    lines = message.splitlines()[1:]
    assert len(lines) == len(files)
    assert any("format version 2" in line for line in lines)
    assert all(any(p.name in line for line in lines) for p in files)
    assert snapshot(outdir) == before

    # only the explicit flag starts over, and even then nothing is deleted
    result, how = run(recipe_path, outdir, resume="auto", start_over=True)
    assert result.step == 4 and "--overwrite" in how
    previous = list(outdir.glob("previous-*"))
    assert len(previous) == 1
    assert {p.name for p in previous[0].iterdir()} >= {p.name for p in files}
    assert checkpoint.load(outdir / "latest.pt")["progress"]["step"] == 4


def test_a_foreign_checkpoint_cannot_be_resumed_into_another_run(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits, iterations=6)
    run(recipe_path, tmp_path / "A", max_steps=2)
    run(recipe_path, tmp_path / "B", max_steps=4)
    a, b = RunDir(tmp_path / "A"), RunDir(tmp_path / "B")
    id_a = a.run_id()
    assert id_a and id_a != b.run_id()
    assert run_id_of(checkpoint.load(a.latest)) == id_a
    before = snapshot(a.path)
    with pytest.raises(NatGanError, match=f"holds run {id_a}, but .* belongs to run {b.run_id()}"):
        resolve_run(recipe_path=None, overrides=[], outdir=a.path, resume=str(b.latest))
    assert snapshot(a.path) == before
    # going back to an earlier snapshot of the same run is still allowed
    _, ck, _ = resolve_run(recipe_path=None, overrides=[], outdir=b.path, resume=str(b.checkpoint_path(2)))
    assert ck["progress"]["step"] == 2
    # and resuming B's checkpoint into a fresh directory continues run B there
    result, _ = run(None, tmp_path / "C", resume=str(b.latest))
    assert result.step == 6 and RunDir(tmp_path / "C").run_id() == b.run_id()


def test_fid_recorded_into_latest_survives_resume_auto(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits, iterations=6)
    outdir = tmp_path / "run"
    run(recipe_path, outdir, max_steps=2)
    rd = RunDir(outdir)
    from natgan.metrics.record import record_in_checkpoint

    record_in_checkpoint(rd.latest, {"fid": 42.0, "mode": "clean", "num_gen": 10}, ema=True)
    _, ck, how = resolve_run(recipe_path=None, overrides=[], outdir=outdir, resume="auto")
    assert [m["fid"] for m in ck["metrics"]] == [42.0]
    result, _ = run(None, outdir, resume="auto")
    assert [m["fid"] for m in checkpoint.load(rd.latest)["metrics"]] == [42.0]


def test_numpy_and_python_global_rngs_are_seeded_from_the_run_seed(tmp_path, digits):
    def draws(seed, name):
        r = recipes.load(tiny_recipe(tmp_path, digits, seed=seed))
        Trainer(r, tmp_path / name, show_progress=False)
        return np.random.random(), random.random()

    np.random.seed(123)
    random.seed(123)
    first = draws(3, "a")
    second = draws(3, "b")
    assert first == second
    assert draws(4, "c") != first


def test_a_second_ctrl_c_says_what_was_saved(tmp_path, digits):
    import os
    import signal

    from natgan.errors import Interrupted

    trainer = Trainer(recipes.load(tiny_recipe(tmp_path, digits)), tmp_path / "run", show_progress=False)
    previous = trainer._install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert trainer.stop_reason == "SIGINT received"
        with pytest.raises(Interrupted, match="second Ctrl-C at step 0: .*no checkpoint was written yet") as info:
            os.kill(os.getpid(), signal.SIGINT)
        assert info.value.exit_code == 130
    finally:
        trainer._restore_signal_handlers(previous)
