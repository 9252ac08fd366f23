"""`nat-gan import` of stylegan2-ada-pytorch snapshots whose discriminator is not the residual config-f one.

NVIDIA's released ``cifar10.pkl`` was trained with ``train.py --cfg=cifar --cond=1``: D ``architecture = 'orig'``
(no residual path), minibatch-stddev group 32, a 2-layer mapping network, ``c_dim = 10``, ``conv_clamp = 256``.
The fixtures (tests/fixtures/official/stylegan2-ada-{cifar,cifar-legacy,skip,clamp}; see its README) were
written by the official code: those settings at a tiny width, once as stylegan2-ada-pytorch's train.py builds
them and once as its legacy.py converts a TensorFlow stylegan2-ada ``--cfg=cifar`` network (the likely origin of
NVIDIA's release pickles: a D label mapping of 0 layers at lr 0.1, no training_set_kwargs, no augment_pipe); a
``skip`` D (a fromRGB per level) with 2 minibatch-stddev channels; and, so that the official ``conv_clamp``
visibly acts, the ``skip`` and a residual D with clamps of 1 and 0.5 (256 never binds at these widths).
Importing them with ``--from auto`` must reproduce the official images and D logits, also on a batch the
minibatch-stddev group splits into several groups, and refuse what nat-gan does not compute in one line.
"""

from pathlib import Path

import pytest
import torch

from natgan import checkpoint
from natgan.errors import CheckpointError, ConfigError
from natgan.importers import import_checkpoint
from natgan.importers.nvlabs_pickle import read_snapshot
from natgan.importers.nvlabs_records import PersistentRecord
from natgan.models import create, get_spec
from test_import_baselines import _cli, _nvlabs_pickle, _plain_dicts, _tree
from test_import_widths import (SNAPSHOT, _assert_official, _discriminator, _expected, _imported,
                                _imported_stylegan2)

FIXTURES = Path(__file__).resolve().parent / "fixtures/official"
# fixture -> the nat-gan config the import must state (read from the D kwargs and the weight shapes)
CASES = {
    "stylegan2-ada-cifar": {"d_architecture": "orig", "mbstd_group": 32, "mbstd_channels": 1, "n_mlp": 2,
                            "channels": [16, 16, 16, 16], "num_classes": 10, "style_dim": 16, "conv_clamp": 256.0,
                            "d_mapping_layers": 8, "d_mapping_lr": 0.01},
    "stylegan2-ada-cifar-legacy": {"d_architecture": "orig", "mbstd_group": 32, "mbstd_channels": 1, "n_mlp": 2,
                                   "channels": [16, 16, 16, 16], "num_classes": 10, "style_dim": 16,
                                   "conv_clamp": 256.0, "d_mapping_layers": 0, "d_mapping_lr": 0.1},
    "stylegan2-ada-skip": {"d_architecture": "skip", "mbstd_group": 8, "mbstd_channels": 2, "n_mlp": 2,
                           "channels": [16, 16, 16, 8], "num_classes": 10, "style_dim": 16, "conv_clamp": 1.0},
    "stylegan2-ada-clamp": {"d_architecture": "resnet", "mbstd_group": 8, "mbstd_channels": 1, "n_mlp": 2,
                            "channels": [16, 16, 16, 8], "num_classes": 10, "style_dim": 16, "conv_clamp": 0.5},
}


def _big_batch():
    """The 64 inputs the fixture script gave the official D (regenerated here, only the logits are stored)."""
    images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(7)).clamp(-1, 1)
    return images, torch.arange(64) % 10


@pytest.mark.parametrize("folder", sorted(CASES))
def test_d_architecture_snapshot_reproduces_the_official_images_and_logits(folder, tmp_path):
    ex, ckpt, cfg = _imported_stylegan2(folder, tmp_path)
    assert {k: cfg[k] for k in CASES[folder]} == CASES[folder]
    assert cfg["d_architecture"] == ex["config"]["d_architecture"]
    assert cfg["channels"] == [ex["config"]["widths"][r] for r in (4, 8, 16, 32)]
    G = checkpoint.build_generator(ckpt)
    D = _discriminator(ckpt)
    labels = ex["c"].argmax(1)
    with torch.no_grad():
        for c in (ex["c"], labels):
            w = G.mapping(ex["z"], c)
            torch.testing.assert_close(w, ex["ws"], atol=1e-6, rtol=0)
            _assert_official(ckpt, G, w, ex, c)
        images, big_labels = _big_batch()
        torch.testing.assert_close(D(images, big_labels), ex["d_logits_batch64"], atol=1e-5, rtol=0)
        # the stored group matters on this batch (64 = 2 x 32, 8 x 8): another group gives other logits
        D.mbstd_group = 2
        assert (D(images, big_labels) - ex["d_logits_batch64"]).abs().max() > 1e-4
        D.mbstd_group = cfg["mbstd_group"]
        # and so does the label
        assert (D(ex["images"], (labels + 1) % 10) - ex["d_logits"]).abs().max() > 1e-3
    notes = " ".join(ckpt["extra"]["import"]["assumptions"])
    # the file holds no training values: the import says which --cfg=cifar used (sample/fid/train --init on
    # the imported file: test_import_widths.test_imported_file_works_with_sample_fid_and_train_init)
    assert ("--cfg=cifar" in notes and "R1 gamma 0.01" in notes) == folder.startswith("stylegan2-ada-cifar")
    # the run's ADA: nat-gan has one, the note says how to continue with it (the legacy layout has no pipe)
    assert ("--set train.augment=ada --set train.augment_p=0.125" in notes) == (folder != "stylegan2-ada-cifar-legacy")


@pytest.mark.parametrize("folder", ["stylegan2-ada-skip", "stylegan2-ada-clamp"])
def test_conv_clamp_acts_in_these_fixtures(folder, tmp_path):
    """Control: without ``model.conv_clamp`` the same weights give clearly other images and logits, so the test
    above checks nat-gan's clamps (G's convs and ToRGBs, D's convs; not D's residual skip conv and 4x4 fromRGB)
    against the official ones."""
    ex = _expected(folder)
    _, ckpt = _imported(folder, tmp_path)
    spec = get_spec("stylegan2")
    G, D = spec.builder(spec.make_config({**ckpt["model"]["config"], "conv_clamp": None}))
    G.load_state_dict(ckpt["weights"]["G_ema"])
    D.load_state_dict(ckpt["weights"]["D"])
    with torch.no_grad():
        images = G.eval().synthesis(ex["ws"], noise_mode="const")
        assert (images - ex["images"]).abs().max() > 0.5
        assert (D.eval()(ex["images"], ex["c"]) - ex["d_logits"]).abs().max() > 0.01


def test_the_residual_discriminator_cannot_stand_in_for_orig(tmp_path):
    """Control: the 'orig' weights in the residual D (its skip convs zeroed) do not give the official logits,
    so the test above tells the architectures apart."""
    ex = _expected("stylegan2-ada-cifar")
    _, ckpt = _imported("stylegan2-ada-cifar", tmp_path)
    spec = get_spec("stylegan2")
    _, D = spec.builder(spec.make_config({**ckpt["model"]["config"], "d_architecture": "resnet"}))
    state = {k: v for k, v in D.state_dict().items()}
    state.update(ckpt["weights"]["D"])
    state.update({k: torch.zeros_like(v) for k, v in state.items() if ".skip." in k})
    D.load_state_dict(state)
    with torch.no_grad():
        assert (D.eval()(ex["images"], ex["c"]) - ex["d_logits"]).abs().max() > 1e-3


def test_released_style_file_name_imports_from_the_cli(tmp_path, capsys):
    """``nat-gan import cifar10.pkl --from auto`` as a user types it (no kimg in the name, legacy layout)."""
    src = tmp_path / "cifar10.pkl"
    src.write_bytes((FIXTURES / "stylegan2-ada-cifar-legacy" / SNAPSHOT).read_bytes())
    out = tmp_path / "cifar10.pt"
    assert _cli(["import", str(src), "--from", "auto", "--out", str(out)]) == 0
    ckpt = checkpoint.load(out)
    assert (ckpt["model"]["config"]["d_architecture"], ckpt["progress"]["step"]) == ("orig", 0)
    assert any("training progress unknown" in a for a in ckpt["extra"]["import"]["assumptions"])
    ex = _expected("stylegan2-ada-cifar-legacy")
    with torch.no_grad():
        torch.testing.assert_close(_discriminator(ckpt)(ex["images"], ex["c"]), ex["d_logits"], atol=1e-5, rtol=0)


def _tree_of(folder):
    snapshot = read_snapshot(FIXTURES / folder / SNAPSHOT)
    return {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()}


@pytest.mark.parametrize("change,message", [
    ({"architecture": "fancy"}, r"D architecture 'fancy' \(nat-gan has 'resnet', 'orig', 'skip'\).*cannot express"),
    ({"architecture": "resnet"}, r"D: missing key 'b32.skip.weight' \(a 'resnet' discriminator\)"),
    ({"architecture": "skip"}, r"D: missing key 'b16.fromrgb.weight' \(a 'skip' discriminator\)"),
    ({"epilogue_kwargs": {"mbstd_group_size": 0}}, r"D minibatch-stddev group 0; .*cannot express"),
    ({"epilogue_kwargs": {"mbstd_group_size": "32"}}, r"D minibatch-stddev group '32'; .*cannot express"),
    ({"epilogue_kwargs": {"mbstd_group_size": 32, "mbstd_num_channels": -1}},
     r"minibatch-stddev with -1 channels.*cannot express"),
    ({"epilogue_kwargs": {"mbstd_group_size": 32, "mbstd_num_channels": 3}},
     r"model.mbstd_channels': 3 does not divide the discriminator's 16 channels"),
    ({"block_kwargs": {"activation": "relu"}}, r"D block_kwargs.activation = 'relu' \(only 'lrelu'\).*cannot express"),
    ({"conv_clamp": 128}, r"G conv_clamp = 256 but D conv_clamp = 128 \(one model.conv_clamp for both\)"),
    ({"conv_clamp": "256"}, r"D conv_clamp = '256'.*cannot express"),
    ({"conv_clamp": None}, r"G conv_clamp = 256 but D conv_clamp = None"),
])
def test_d_kwargs_nat_gan_cannot_follow_are_one_line_errors(change, message, tmp_path, monkeypatch):
    tree = _tree_of("stylegan2-ada-cifar")
    kwargs = tree["D"]["state"]["_init_kwargs"]
    tree["D"]["state"]["_init_kwargs"] = {**kwargs, **change}
    with pytest.raises(CheckpointError, match=message) as info:
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch), "auto")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("folder", ["stylegan2-ada-cifar", "ganformer"])
def test_a_minibatch_stddev_group_of_none_is_the_whole_minibatch(folder, tmp_path, monkeypatch):
    """The official ``mbstd_group_size = None`` (``G = N``; what legacy.py gives a TensorFlow D that did not
    state it) imports as ``model.mbstd_group = 0``, which nat-gan computes over the whole minibatch."""
    tree = _tree_of(folder)
    kwargs = tree["D"]["state"]["_init_kwargs"]
    tree["D"]["state"]["_init_kwargs"] = {**kwargs, "epilogue_kwargs": {**(kwargs.get("epilogue_kwargs") or {}),
                                                                       "mbstd_group_size": None}}
    _, ckpt = import_checkpoint(_nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch), "auto")
    assert ckpt["model"]["config"]["mbstd_group"] == 0
    D = _discriminator(ckpt)
    c = {} if folder == "ganformer" else {"c": torch.arange(64) % 10}
    images = _big_batch()[0][:, :, :D.resolution, :D.resolution]
    with torch.no_grad():
        whole = D(images, **c)
        D.mbstd_group = 64                                      # official: G = N when the group is None
        torch.testing.assert_close(whole, D(images, **c), atol=0, rtol=0)
        D.mbstd_group = 2
        assert (whole - D(images, **c)).abs().max() > 1e-4
        D.mbstd_group = 0
    from natgan.train.batch_checks import check_discriminator_batch

    check_discriminator_batch(D, 7)                             # any batch is one group


def test_ganformer_d_with_other_minibatch_stddev_channels_is_refused(tmp_path, monkeypatch):
    tree = _tree_of("ganformer")
    kwargs = tree["D"]["state"]["_init_kwargs"]
    tree["D"]["state"]["_init_kwargs"] = {**kwargs, "epilogue_kwargs": {"mbstd_num_channels": 2}}
    with pytest.raises(CheckpointError, match=r"D minibatch-stddev with 2 channels \(only 1\).*cannot express"):
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch), "auto")


@pytest.mark.parametrize("key,value,message", [
    ("synthesis_kwargs", {"use_noise": False}, r"G synthesis_kwargs.use_noise = False .*cannot express"),
    ("synthesis_kwargs", {"activation": "relu"}, r"G synthesis_kwargs.activation = 'relu' \(only 'lrelu'\)"),
    ("mapping_kwargs", {"activation": "linear"}, r"G mapping_kwargs.activation = 'linear' \(only 'lrelu'\)"),
])
def test_legacy_g_kwargs_nat_gan_cannot_follow_are_one_line_errors(key, value, message, tmp_path, monkeypatch):
    """legacy.py states activation and use_noise for converted TensorFlow generators: others are refused."""
    tree = _tree_of("stylegan2-ada-cifar-legacy")
    for name in ("G", "G_ema"):
        kwargs = tree[name]["state"]["_init_kwargs"]
        tree[name]["state"]["_init_kwargs"] = {**kwargs, key: {**kwargs[key], **value}}
    with pytest.raises(CheckpointError, match=message) as info:
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch), "auto")
    assert "\n" not in str(info.value)


def test_an_orig_d_holding_a_residual_conv_is_refused_not_dropped(tmp_path, monkeypatch):
    """Weights the stated architecture has no place for are errors (the residual 'skip' conv in an 'orig' D)."""
    tree = _tree_of("stylegan2-ada-cifar")
    resnet = _tree_of("stylegan2-ada-cond")
    tree["D"]["state"]["_modules"]["b16"]["state"]["_modules"]["skip"] = \
        resnet["D"]["state"]["_modules"]["b16"]["state"]["_modules"]["skip"]
    with pytest.raises(CheckpointError, match=r"D: unexpected key 'b16.skip.weight' \(.*'orig' discriminator\)"):
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch), "auto")


def test_cli_refusal_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    tree = _tree_of("stylegan2-ada-cifar")
    tree["D"]["state"]["_init_kwargs"] = {**tree["D"]["state"]["_init_kwargs"], "architecture": "fancy"}
    path = _nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch)
    out = tmp_path / "imported.pt"
    assert _cli(["import", str(path), "--from", "auto", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "'fancy'" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ the model option

def test_d_architecture_mbstd_channels_and_conv_clamp_are_validated():
    spec = get_spec("stylegan2")
    with pytest.raises(ConfigError, match="model.d_architecture"):
        spec.make_config({"resolution": 32, "d_architecture": "fancy"})
    with pytest.raises(ConfigError, match="model.conv_clamp': expected a bound > 0"):
        spec.make_config({"resolution": 32, "conv_clamp": 0.0})
    with pytest.raises(ConfigError, match="model.mbstd_channels': 3 does not divide the discriminator's 16"):
        spec.make_config({"resolution": 32, "channel_max": 16, "mbstd_channels": 3})


def test_d_without_a_minibatch_stddev_head():
    """``mbstd_channels = 0`` (the official ``mbstd_num_channels = 0``): no head, no group for the trainer to
    check, and the logits do not depend on the rest of the batch."""
    from natgan.train.batch_checks import check_discriminator_batch

    torch.manual_seed(0)
    D = create("stylegan2", resolution=16, style_dim=16, n_mlp=2, channel_max=16, mbstd_channels=0,
               d_architecture="orig").discriminator.eval()
    assert D.mbstd_group is None and D.final_conv[0].weight.shape[1] == 16
    check_discriminator_batch(D, 3)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(D(x)[:1], D(x[:1]))
