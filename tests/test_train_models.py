"""A few real training steps for every registered architecture (reduced widths, CPU, tiny data).

Each model file has its own gradient tests; this one checks that the shared trainer drives every
architecture end to end — its normalisation, regularisers and checkpoint — with finite losses.
"""

import pytest
import torch

from natgan import checkpoint, recipe as recipes
from natgan.models import list_models
from natgan.train import train
from reduced_models import REDUCED, family

# Per-architecture training settings that differ from the StyleNAT defaults (as in each paper's recipe).
TRAIN = {
    "stylegan2": dict(style_mixing=0.9, pl_weight=2.0, g_reg_every=2, bcr=False, ttur=False, g_lr=0.002, d_lr=0.002),
    "ganformer": dict(style_mixing=0.9, bcr=False, ttur=False),
    "hit": dict(r1_every=1, r1=20.0, d_clip=0.0, update="simultaneous", ema_start=1, ema_buffers="average"),
}


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    from natgan.data import prepare_digits

    out = tmp_path_factory.mktemp("data") / "digits16.lmdb"
    prepare_digits(out, sizes=[16], progress=False)
    return str(out)


def public_models():
    return [spec.name for spec in list_models() if not spec.name.startswith("_")]


def test_every_family_is_covered():
    assert {family(name) for name in public_models()} == set(REDUCED)


@pytest.mark.parametrize("name", sorted({family(n) for n in public_models()}))
def test_few_training_steps(name, tmp_path, digits16):
    train_cfg = {"batch": 4, "iterations": 3, "lr_decay": False, "r1_every": 2, "checkpoint_every": 3,
                 "sample_every": 3, "log_every": 1, **TRAIN.get(name, {})}
    r = recipes.from_dict({"model": {"name": name, **REDUCED[name]}, "data": {"path": digits16, "workers": 0},
                           "train": train_cfg})
    result = train(r, tmp_path / name, show_progress=False)
    assert result.step == 3
    ck = checkpoint.load(tmp_path / name / "latest.pt")
    G = checkpoint.build_generator(ck)
    images = G(torch.randn(2, G.z_dim))
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    log = (tmp_path / name / "log.txt").read_text()
    losses = [float(part.split()[1]) for line in log.splitlines() if "step " in line
              for part in line.split("  ") if part.startswith(("D ", "G "))]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_activation_checkpointing_trains_identically(name, tmp_path, digits16):
    """`train.activation_checkpointing = true` works for every family and changes nothing but memory:
    the same weights, buffers (HiT's BatchNorm statistics update once) and noise after real steps."""
    states = []
    for enabled in (False, True):
        train_cfg = {"batch": 4, "iterations": 2, "lr_decay": False, "r1_every": 2, "checkpoint_every": 2,
                     "sample_every": 2, "log_every": 1, "activation_checkpointing": enabled, **TRAIN.get(name, {})}
        r = recipes.from_dict({"model": {"name": name, **REDUCED[name]}, "data": {"path": digits16, "workers": 0},
                               "train": train_cfg})
        outdir = tmp_path / f"ckpt-{enabled}"
        assert train(r, outdir, show_progress=False).step == 2
        weights = checkpoint.load(outdir / "latest.pt")["weights"]
        states.append({**{f"G.{k}": v for k, v in weights["G"].items()},
                       **{f"D.{k}": v for k, v in weights["D"].items()}})
    plain, checkpointed = states
    assert plain.keys() == checkpointed.keys()
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-6, atol=1e-7, msg=key)
