"""One device resolver and one precision scope for every command and the trainer."""

import pytest
import torch

import tiny_model  # noqa: F401  (registers "_tiny_test")
from natgan import recipe as recipes
from natgan.devices import autocast, precision_context, resolve_device
from natgan.errors import ConfigError
from natgan.train import train


def test_resolver_names_devices_one_way():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="key 'train.device' 'tpu': not a device"):
        resolve_device("tpu", option="key 'train.device'")
    with pytest.raises(ConfigError, match="--device 'gpu!': not a device"):
        resolve_device("gpu!")
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="MPS is not available"):
            resolve_device("mps")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_bench_sampling_and_trainer_share_the_resolver():
    from natgan import sampling
    from natgan.bench import measure
    from natgan.metrics import runner
    from natgan.train import distributed

    assert sampling.resolve_device is measure.resolve_device is runner.resolve_device is resolve_device
    assert distributed.resolve_device is resolve_device


def test_precision_scope_restores_global_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    with precision_context("tf32", torch.device("cpu")) as make_autocast:
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with make_autocast():
            assert torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype == torch.float32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark) == before
    with autocast("bf16", torch.device("cpu")):
        assert torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        with precision_context("fp16", torch.device("cpu")):
            pass


def test_training_leaves_tf32_flags_as_it_found_them(tmp_path, monkeypatch):
    from natgan.data import prepare_digits

    data = tmp_path / "d.lmdb"
    prepare_digits(data, sizes=[8], progress=False)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    seen = []
    r = recipes.from_dict({"model": {"name": "_tiny_test", "resolution": 8}, "data": {"path": str(data), "workers": 0},
                           "train": {"batch": 2, "iterations": 1, "lr_decay": False, "precision": "tf32", "bcr": False,
                                     "sample_every": 1, "checkpoint_every": 1}})
    import natgan.train.trainer as trainer_mod

    original = trainer_mod.Trainer._update_ema

    def spy(self):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return original(self)

    monkeypatch.setattr(trainer_mod.Trainer, "_update_ema", spy)
    try:
        train(r, tmp_path / "run", show_progress=False)
        assert seen == [(True, True)]                       # the run trains with TF32 allowed ...
        assert not torch.backends.cuda.matmul.allow_tf32    # ... and restores the flags afterwards
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
