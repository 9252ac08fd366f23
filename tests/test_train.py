"""The training loop end to end: exact resume, kill/SIGTERM safety, non-finite stop, run-dir locking."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tiny_model  # noqa: F401
from natgan import checkpoint, recipe as recipes
from natgan.errors import ConfigError, NatGanError
from natgan.train import losses, resolve_run, train
from natgan.train.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from natgan.data import prepare_digits

    out = tmp_path_factory.mktemp("data") / "digits8.lmdb"
    prepare_digits(out, sizes=[8], progress=False)
    return str(out)


def tiny_recipe(tmp_path, digits, **train):
    settings = {"batch": 4, "iterations": 8, "lr_decay_start": 4, "r1_every": 2, "style_mixing": 0.5,
                "checkpoint_every": 2, "sample_every": 4, "log_every": 2, "bcr": True, "seed": 3,
                "pl_weight": 0.0, **train}
    text = "[model]\nname = \"_tiny_test\"\nresolution = 8\n[data]\npath = \"%s\"\nworkers = 0\n[train]\n" % digits
    text += "".join(f"{k} = {recipes.toml_value(v)}\n" for k, v in settings.items())
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def state_tensors(ck):
    out = {}
    for name in ("G", "G_ema", "D"):
        out.update({f"{name}.{k}": v for k, v in ck["weights"][name].items()})
    for name in ("G", "D"):
        for idx, st in ck["optim"][name]["state"].items():
            out.update({f"opt{name}.{idx}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return out


def run(recipe_path, outdir, resume=None, max_steps=None, overrides=()):
    r, ck, _ = resolve_run(recipe_path=recipe_path, overrides=list(overrides), outdir=outdir, resume=resume)
    return train(r, outdir, resume_from=ck, max_steps=max_steps, show_progress=False)


def test_resume_is_bit_exact(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits)
    straight = run(recipe_path, tmp_path / "straight")
    assert straight.step == 8 and straight.images_seen == 32 and not straight.stopped_early
    half = run(recipe_path, tmp_path / "split", max_steps=4)
    assert half.stopped_early and half.step == 4
    resumed = run(None, tmp_path / "split", resume="auto")
    assert resumed.step == 8 and resumed.images_seen == 32
    a = state_tensors(checkpoint.load(tmp_path / "straight" / "latest.pt"))
    b = state_tensors(checkpoint.load(tmp_path / "split" / "latest.pt"))
    assert a.keys() == b.keys() and any(k.startswith("optG") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ck = checkpoint.load(tmp_path / "split" / "latest.pt")
    assert ck["progress"] == {"step": 8, "images_seen": 32}
    # run directory contents
    names = {p.name for p in (tmp_path / "split").iterdir()}
    assert {"recipe.toml", "latest.pt", "samples", "tb", "log.txt"} <= names
    assert len(list((tmp_path / "split").glob("ckpt-*.pt"))) <= 3
    assert (tmp_path / "split" / "samples" / "step-0000008.png").exists()
    stored = recipes.from_dict(ck["recipe"])
    assert stored.train.batch == 4 and stored.model_name == "_tiny_test"


def test_existing_run_needs_resume_and_model_cannot_change(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits, iterations=2, lr_decay=False)
    run(recipe_path, tmp_path / "r")
    with pytest.raises(NatGanError, match="already holds checkpoints; continue that run with --resume auto"):
        resolve_run(recipe_path=recipe_path, overrides=[], outdir=tmp_path / "r", resume=None)
    with pytest.raises(ConfigError, match="model of a run cannot change"):
        resolve_run(recipe_path=None, overrides=["model.width=3"], outdir=tmp_path / "r", resume="auto")
    r, ck, how = resolve_run(recipe_path=None, overrides=["train.iterations=4"], outdir=tmp_path / "r", resume="auto")
    assert ck["progress"]["step"] == 2 and r.train.iterations == 4 and "resuming" in how
    assert run(None, tmp_path / "r", resume="auto", overrides=["train.iterations=4"]).step == 4


def test_non_finite_loss_stops_and_keeps_last_good(tmp_path, digits, monkeypatch):
    recipe_path = tiny_recipe(tmp_path, digits, iterations=10)
    real = losses.g_nonsaturating
    calls = {"n": 0}

    def poisoned(logits):
        calls["n"] += 1
        value = real(logits)
        return value * float("nan") if calls["n"] == 4 else value

    monkeypatch.setattr(losses, "g_nonsaturating", poisoned)
    with pytest.raises(NatGanError, match=r"non-finite loss at step 3 .*last good checkpoint: .*ckpt-0000002.pt"):
        run(recipe_path, tmp_path / "nan")
    assert checkpoint.load(tmp_path / "nan" / "latest.pt")["progress"]["step"] == 2
    RunDir(tmp_path / "nan").lock()  # the failed trainer released its lock
    log = (tmp_path / "nan" / "log.txt").read_text()
    assert "error at step 3: non-finite loss at step 3" in log.splitlines()[-1]


def test_second_trainer_is_refused(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits, iterations=2, lr_decay=False)
    holder = RunDir(tmp_path / "busy")
    holder.lock()
    with pytest.raises(NatGanError, match="in use by another trainer"):
        run(recipe_path, tmp_path / "busy")
    holder.unlock()


def _start_trainer(recipe_path, outdir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launcher = "import sys, tiny_model; from natgan.cli import main; main(sys.argv[1:])"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-c", launcher, "train", "--recipe", str(recipe_path), "--outdir",
                             str(outdir), "--resume", "auto", "--no-progress"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc, timeout=900):
    """True once ``predicate()`` holds; False if the trainer exits first. The timeout is a hang guard
    (a busy machine only makes the wait longer), not a speed limit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.2)
    return False


def test_sigkill_then_resume_and_sigterm_checkpoints(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits, iterations=100_000, lr_decay=False, checkpoint_every=5,
                              sample_every=1000, log_every=1000)
    outdir = tmp_path / "killed"
    proc = _start_trainer(recipe_path, outdir)
    assert _wait_for(lambda: (outdir / "latest.pt").exists(), proc), proc.communicate()[0]
    proc.kill()
    proc.wait()
    saved = RunDir(outdir).newest_valid()
    assert saved is not None and saved[1]["progress"]["step"] % 5 == 0
    last_step = saved[1]["progress"]["step"]
    # SIGTERM: the resumed trainer continues from the kill point and writes a checkpoint before exiting
    proc = _start_trainer(recipe_path, outdir)
    assert _wait_for(lambda: checkpoint.load(outdir / "latest.pt")["progress"]["step"] > last_step, proc), \
        proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert f"resuming from {outdir}" in out and f"at step {last_step}" in out
    assert "SIGTERM received" in out
    final = checkpoint.load(outdir / "latest.pt")["progress"]
    assert (outdir / "log.txt").read_text().splitlines()[-1].endswith(
        f"stopped at step {final['step']}: SIGTERM received")
    assert final["step"] > last_step and final["images_seen"] == final["step"] * 4
    assert "latest checkpoint" in out


def test_dry_run_prints_recipe_sizes_and_schedule(tmp_path, digits, capsys):
    from natgan.cli import main

    recipe_path = tiny_recipe(tmp_path, digits)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--recipe", str(recipe_path), "--outdir", str(tmp_path / "dry"), "--dry-run", "--json",
              "--set", "train.batch=8"])
    assert exc.value.code in (0, None)
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["recipe"]["train"]["batch"] == 8 and out["model"]["g_params"] > 0
    assert out["schedule"]["d_lr"] == pytest.approx(2e-4 * 2 / 3) and out["schedule"]["accumulation_steps"] == 1
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_wrong_data_is_refused_before_anything_is_created(tmp_path, digits, capsys, dry_run):
    """A missing path, a file that is not a dataset and a dataset without the model's resolution are refused
    with one line naming the path, before the run directory exists (and by --dry-run too)."""
    from natgan.cli import main

    recipe_path = tiny_recipe(tmp_path, digits)
    not_data = tmp_path / "notes.txt"
    not_data.write_text("hello")
    cases = [(str(tmp_path / "missing.lmdb"), "missing.lmdb"), (str(not_data), "notes.txt"),
             (digits, "16")]
    for data, names in cases:
        outdir = tmp_path / "run"
        args = ["train", "--recipe", str(recipe_path), "--data", data, "--outdir", str(outdir), "--no-progress"]
        if data == digits:
            args += ["--set", "model.resolution=16"]
        with pytest.raises(SystemExit) as exc:
            main(args + (["--dry-run"] if dry_run else []))
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert exc.value.code == 1 and last.startswith("error: ") and names in last and "Traceback" not in err, err
        assert not outdir.exists(), sorted(p.name for p in outdir.iterdir())


def test_periodic_fid_is_logged_and_stored(tmp_path, digits):
    recipe_path = tiny_recipe(tmp_path, digits, iterations=4, lr_decay=False)
    r, _, _ = resolve_run(recipe_path=recipe_path, overrides=["eval.every=2", "eval.num=16", "eval.batch=8"],
                          outdir=tmp_path / "fid", resume=None)
    result = train(r, tmp_path / "fid", show_progress=False,
                   fid_extractor=lambda images: images.float().mean(dim=(2, 3))[:, :2])
    steps = [m["step"] for m in result.metrics]
    assert steps == [2, 4] and all(m["fid"] >= 0 for m in result.metrics)
    stored = checkpoint.load(tmp_path / "fid" / "latest.pt")["metrics"]
    assert [m["step"] for m in stored] == [2, 4] and stored[-1]["fid"] == result.metrics[-1]["fid"]


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_torchrun_two_processes(tmp_path, digits, update):
    """Data parallel under torchrun (gloo on CPU): one checkpoint, global batch counted once, per-rank RNG kept."""
    recipe_path = tiny_recipe(tmp_path, digits, iterations=4, lr_decay=False, checkpoint_every=4, update=update)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    launcher = "import sys, tiny_model; from natgan.cli import main; main(sys.argv[1:])"
    script = tmp_path / "launch.py"
    script.write_text(launcher)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), "train", "--recipe", str(recipe_path), "--outdir", str(tmp_path / "ddp"),
                           "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ck = checkpoint.load(tmp_path / "ddp" / "latest.pt")
    assert ck["progress"] == {"step": 4, "images_seen": 16}
    assert len(ck["rng"]["ranks"]) == 2
    assert proc.stdout.count("finished at step 4") == 1


# ---------------------------------------------------------------- HiT's simultaneous update and delayed EMA


def _trainer(tmp_path, digits, **train_settings):
    from natgan.train.trainer import Trainer

    r, _, _ = resolve_run(recipe_path=tiny_recipe(tmp_path, digits, **train_settings), overrides=[],
                          outdir=tmp_path / "run", resume=None)
    return Trainer(r, tmp_path / "run", show_progress=False)


def test_simultaneous_update_uses_one_forward_and_own_losses(tmp_path, digits):
    """Both networks step from the same fakes against the pre-update D, each with its own loss; R1 and
    bCR sit inside the D loss; accumulation over micro-batches averages."""
    t = _trainer(tmp_path, digits, update="simultaneous", batch=4, batch_per_gpu=2, r1_every=1, r1=3.0,
                 style_mixing=0.0, bcr=True, d_clip=0.0)
    torch.manual_seed(0)
    reals = [torch.rand(2, 3, 8, 8) * 2 - 1 for _ in range(2)]
    G0, D0 = [{k: v.clone() for k, v in m.state_dict().items()} for m in (t.G, t.D)]
    gens_state = {name: getattr(t.gens, name).get_state() for name in ("z", "aug", "flip")}
    captured = {}
    d_step = t.d_opt.step  # D really steps (first): G's gradient must still be the pre-update one
    t.d_opt.step = lambda: (captured.__setitem__("D", [p.grad.clone() for p in t.D.parameters()]), d_step())
    t.g_opt.step = lambda: captured.__setitem__("G", [p.grad.clone() for p in t.G.parameters()])
    stats = t._joint_step(iter(reals))
    assert set(stats) == {"D", "G", "bCR", "R1"}

    # the same step written out by hand, from the saved weights and random streams
    from natgan.augment import bcr

    t.G.load_state_dict(G0)
    t.D.load_state_dict(D0)
    for name, state in gens_state.items():
        getattr(t.gens, name).set_state(state)
    g_ref = [torch.zeros_like(p) for p in t.G.parameters()]
    d_ref = [torch.zeros_like(p) for p in t.D.parameters()]
    for real in reals:
        real = t._flip(real).requires_grad_(True)
        fake = t.G(torch.randn(2, t.G.z_dim, generator=t.gens.z))
        fake_logits, real_logits = t.D(fake), t.D(real)
        d_loss = losses.d_logistic(real_logits, fake_logits)
        d_loss = d_loss + 10.0 * losses.consistency(t.D(bcr.bcr_augment(fake.detach(), t.gens.aug)), fake_logits)
        d_loss = d_loss + 10.0 * losses.consistency(t.D(bcr.bcr_augment(real.detach(), t.gens.aug)), real_logits)
        d_loss = d_loss + 3.0 / 2 * losses.r1_penalty(real_logits, real)
        g_loss = losses.g_nonsaturating(fake_logits)
        for ref, loss, module in ((d_ref, d_loss, t.D), (g_ref, g_loss, t.G)):
            grads = torch.autograd.grad(loss / 2, list(module.parameters()), retain_graph=True, allow_unused=True)
            for r, g in zip(ref, grads):
                r += 0 if g is None else g
    for got, ref in ((captured["D"], d_ref), (captured["G"], g_ref)):
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_simultaneous_update_trains_and_resumes_exactly(tmp_path, digits):
    extra = dict(update="simultaneous", r1_every=1, ema_start=3, ema_buffers="average", style_mixing=0.0)
    recipe_path = tiny_recipe(tmp_path, digits, **extra)
    straight = run(recipe_path, tmp_path / "straight")
    assert straight.step == 8
    run(recipe_path, tmp_path / "split", max_steps=4)
    run(None, tmp_path / "split", resume="auto")
    a = state_tensors(checkpoint.load(tmp_path / "straight" / "latest.pt"))
    b = state_tensors(checkpoint.load(tmp_path / "split" / "latest.pt"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_ema_start_copies_then_averages_and_buffers_can_be_averaged(tmp_path, digits):
    t = _trainer(tmp_path, digits, ema_start=2, ema_beta=0.5, ema_buffers="average")
    t.G.register_buffer("stat", torch.zeros(3))
    t.G_ema.register_buffer("stat", torch.full((3,), 7.0))
    param = next(t.G.parameters())
    for step, value in ((0, 1.0), (1, 2.0), (2, 4.0)):
        t.step = step
        with torch.no_grad():
            param.fill_(value)
            t.G.stat.fill_(value)
        t._update_ema()
    ema_param = next(t.G_ema.parameters())
    assert torch.all(ema_param == 3.0)        # copy after updates 1 and 2 (2.0), then 0.5 * 2 + 0.5 * 4
    assert torch.all(t.G_ema.stat == 3.0)     # the float buffer is averaged the same way


def test_simultaneous_update_refuses_path_length(tmp_path, digits):
    with pytest.raises(ConfigError, match="train.pl_weight"):
        run(tiny_recipe(tmp_path, digits, update="simultaneous", pl_weight=2.0), tmp_path / "out")


def test_preview_grid_is_sample_of_the_logged_seeds(tmp_path, digits):
    """The preview PNG is what `nat-gan sample --seeds 0-15 --grid 4x4` writes from the same checkpoint,
    and the log names those seeds."""
    import numpy as np
    from PIL import Image

    from natgan.sampling import load_generator, write_grid

    run(tiny_recipe(tmp_path, digits, iterations=4, checkpoint_every=4), tmp_path / "run")
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "preview grids: seeds 0-15" in log and "--seeds 0-15 --grid 4x4" in log
    preview = np.asarray(Image.open(tmp_path / "run" / "samples" / "step-0000004.png"))
    G = load_generator(tmp_path / "run" / "latest.pt").G
    sampled = np.asarray(Image.open(write_grid(G, list(range(16)), tmp_path / "grid.png", 4, 4)))
    assert preview.shape == (32, 32, 3) and np.array_equal(preview, sampled)
