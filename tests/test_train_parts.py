"""Trainer building blocks: schedule maths, bCR augmentations, resumable data order, run directory."""

import math

import pytest
import torch

from natgan.errors import ConfigError, NatGanError
from natgan.recipe import TrainConfig
from natgan.augment import bcr
from natgan.train import schedule
from natgan.train.rundir import RunDir
from natgan.train.sampler import ResumableSampler
from natgan.train.trainer import BatchPlan


def test_official_optimizer_settings():
    t = TrainConfig()  # defaults = official StyleNAT FFHQ-256
    g, d = schedule.g_settings(t), schedule.d_settings(t)
    assert g.lr == pytest.approx(5e-5) and g.betas == (0.0, 0.99)          # TTUR: D lr / 4, no lazy factor
    assert d.lr == pytest.approx(2e-4 * 16 / 17)                              # lazy R1 every 16
    assert d.betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert t.ema_beta == pytest.approx(0.5 ** (32 / 10_000))


def test_linear_decay_and_ttur_quirk():
    t = TrainConfig(iterations=1000, lr_decay_start=800)
    assert schedule.learning_rates(t, 799) == (pytest.approx(5e-5), pytest.approx(2e-4 * 16 / 17))
    g, d = schedule.learning_rates(t, 900)
    assert g == pytest.approx(2.5e-5) and d == pytest.approx(4 * g)
    assert schedule.learning_rates(t, 1000)[0] == 0.0
    no_ttur = TrainConfig(ttur=False, g_lr=1e-3, lr_decay=False, r1_every=1)
    assert schedule.learning_rates(no_ttur, 10**6) == (1e-3, 2e-4)


def test_batch_plan():
    p = BatchPlan.make(64, 8, None)
    assert (p.per_gpu, p.micro, p.accumulation) == (8, 8, 1)
    p = BatchPlan.make(64, 2, 8)
    assert (p.per_gpu, p.micro, p.accumulation) == (32, 8, 4)
    with pytest.raises(ConfigError, match="not divisible by 3 GPUs"):
        BatchPlan.make(64, 3, None)
    with pytest.raises(ConfigError, match="does not divide"):
        BatchPlan.make(64, 1, 24)


def test_sampler_resumes_exactly_and_shards():
    full = ResumableSampler(10, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(35)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    resumed = iter(ResumableSampler(10, seed=3, start=17))
    assert [next(resumed) for _ in range(18)] == stream[17:]
    r0, r1 = iter(ResumableSampler(10, seed=3, rank=0, world=2)), iter(ResumableSampler(10, seed=3, rank=1, world=2))
    interleaved = [x for pair in zip([next(r0) for _ in range(10)], [next(r1) for _ in range(10)]) for x in pair]
    assert interleaved == stream[:20]
    assert stream[:10] != list(range(10))  # really shuffled


def test_translate_and_cutout_semantics():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16) + 1
    shifted = bcr.translate(x, gen)
    for b in range(2):  # every output pixel is either 0 or the input pixel at a constant offset
        nz = shifted[b, 0].nonzero()
        y, xx = nz[0].tolist()
        src = (x[b, 0] == shifted[b, 0, y, xx]).nonzero()[0].tolist()
        dy, dx = y - src[0], xx - src[1]
        assert abs(dy) <= 2 and abs(dx) <= 2
        assert torch.equal(shifted[b, :, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)],
                           x[b, :, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)])
    cut = bcr.cutout(torch.ones(4, 3, 16, 16), gen)
    zeros = (cut[:, 0] == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 64).all() and (cut[:, 0] == cut[:, 2]).all()


def test_bcr_augment_is_differentiable_and_reproducible():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    a = bcr.bcr_augment(x, torch.Generator().manual_seed(5))
    b = bcr.bcr_augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_colour_augmentations_match_definitions():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 4, 4)
    state = gen.get_state()
    out = bcr.brightness(x, gen)
    gen.set_state(state)
    shift = torch.rand(3, 1, 1, 1, generator=gen) - 0.5
    assert torch.allclose(out, x + shift)
    y = bcr.contrast(x, torch.Generator().manual_seed(2))
    assert torch.allclose(y.mean(dim=[1, 2, 3]), x.mean(dim=[1, 2, 3]), atol=1e-6)  # contrast keeps the mean
    s = bcr.saturation(x, torch.Generator().manual_seed(2))
    assert torch.allclose(s.mean(dim=1), x.mean(dim=1), atol=1e-6)  # saturation keeps the channel mean


def test_rundir_lock_and_retention(tmp_path):
    a, b = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    a.lock()
    with pytest.raises(NatGanError, match="in use by another trainer"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()


def test_lazy_factor():
    assert schedule.lazy_factor(16) == 16 / 17 and schedule.lazy_factor(1) == 1.0
    assert math.isclose(schedule.decay_fraction(TrainConfig(lr_decay=False), 10**7), 1.0)
