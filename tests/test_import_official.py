"""`nat-gan import`: official StyleNAT/StyleSwin containers -> v1 checkpoints that reproduce the official images.

The fixtures (shared/fixtures/official, see its README) were produced by running the official generator
code; ``*.expected.pt`` holds its outputs for fixed latents.
"""

import argparse
import json
import re
import os

import pytest
import torch

from natgan import checkpoint, recipe
from natgan.cli import main
from natgan.errors import CheckpointError, ConfigError
from natgan.importers import import_official, load_official_container
from natgan.importers.official import step_from_filename
from natgan.models import count_params
from shared_fixtures import OFFICIAL, requires_official

FIXTURES = OFFICIAL
pytestmark = requires_official

CASES = [("stylenat_hydra_tiny", "stylenat", False), ("stylenat_legacy_tiny", "stylenat", False),
         ("stylenat_legacy_tiny", "stylenat", True), ("styleswin_tiny", "styleswin", False)]


def expected(name):
    return torch.load(FIXTURES / f"{name}.expected.pt", map_location="cpu", weights_only=True)


def converted(name, kind, tmp_path, **kwargs):
    ckpt = import_official(FIXTURES / f"{name}.pt", kind, **kwargs)
    path = checkpoint.save(ckpt, tmp_path / f"{name}.natgan.pt")
    return checkpoint.load(path)


@pytest.mark.parametrize("name, kind, keep_split", CASES)
def test_reproduces_the_official_images(name, kind, keep_split, tmp_path):
    ex = expected(name)
    ckpt = converted(name, kind, tmp_path, keep_split_heads=keep_split)
    G = checkpoint.build_generator(ckpt)
    assert count_params(G) == ex["config"]["generator_params"]
    assert G.normalization == ckpt["normalization"] == "imagenet"
    with torch.no_grad():
        torch.testing.assert_close(G(ex["z"]), ex["images"], atol=1e-5, rtol=0)
        torch.testing.assert_close(G.synthesis(G.mapping(ex["z"]))[:, :, :4], ex["images"][:, :, :4], atol=1e-5, rtol=0)
        torch.testing.assert_close(G.style(ex["z"]), ex["w"], atol=1e-5, rtol=0)
        G64 = G.double()
        torch.testing.assert_close(G64(ex["z"].double()), ex["images_float64"], atol=2e-6, rtol=0)
        # 'g' is the non-EMA generator: different weights, different images.
        G_raw = checkpoint.build_generator(ckpt, ema=False)
        assert (G_raw(ex["z"]) - ex["images"]).abs().max() > 0.1


def test_what_the_checkpoint_carries(tmp_path):
    ckpt = converted("stylenat_legacy_tiny", "stylenat", tmp_path)
    assert set(ckpt["weights"]) == {"G", "G_ema", "D"} and set(ckpt["optim"]) == {"G", "D"}
    cfg = ckpt["model"]["config"]
    assert cfg["channels"] == [64] * 4 and cfg["d_channels"] == [32] * 4 and cfg["head_layout"] == "hydra"
    assert cfg["dilations"] == [[1], [1], [1, 2], [1, 3]]
    assert "layers.1.blocks.0.attn.rpb.0" in ckpt["weights"]["G_ema"]                 # 8x8 halves merged
    assert ckpt["weights"]["G_ema"]["layers.1.blocks.0.attn.rpb.0"].shape == (4, 9, 9)
    r = recipe.from_dict(ckpt["recipe"])                                              # a full, valid recipe
    assert r.model_name == "stylenat" and r.data.flip
    assert (r.train.iterations, r.train.d_lr, r.train.r1, r.train.lr_decay_start, r.train.ttur) == \
        (1_000_000, 2e-4, 10.0, 775_000, True)
    assert r.eval.num == 50_000
    assert ckpt["extra"]["import"]["official_args"]["kernels"] == [[3], [5], [3], [3, 5]]
    swin = converted("styleswin_tiny", "styleswin", tmp_path)
    assert recipe.from_dict(swin["recipe"]).data.flip is False


def test_discriminator_weights_transfer(tmp_path):
    from natgan.models import get_spec

    ckpt = converted("styleswin_tiny", "styleswin", tmp_path)
    spec = get_spec("styleswin")
    _, D = spec.builder(spec.make_config(ckpt["model"]["config"]))
    D.load_state_dict(ckpt["weights"]["D"])
    official = load_official_container(FIXTURES / "styleswin_tiny.pt")["d"]
    for key, value in official.items():
        assert torch.equal(D.state_dict()[key], value), key
    assert D.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 1)


@pytest.mark.parametrize("name, kind, keep_split", CASES)
def test_adam_states_follow_their_parameters(name, kind, keep_split):
    """Fill the official Adam states with values unique to each parameter; after import every state must sit
    on the parameter with the same weights (rpb0/rpb1 merged along heads where the halves were merged)."""
    container = load_official_container(FIXTURES / f"{name}.pt")
    buffers = ("relative_position_index", "attn_mask2", "_float_tensor", "upsample.kernel")
    official_params = [k for k in container["g"] if not k.endswith(buffers)]
    assert len(official_params) == len(container["g_optim"]["param_groups"][0]["params"])
    container["g_optim"]["state"] = {
        i: {"step": torch.tensor(7.0), "exp_avg": container["g"][k] * 2, "exp_avg_sq": container["g"][k] ** 2}
        for i, k in enumerate(official_params)}
    ckpt = import_official(container, kind, keep_split_heads=keep_split)
    G = checkpoint.build_generator(ckpt, ema=False)
    params = list(G.parameters())
    state = ckpt["optim"]["G"]["state"]
    assert sorted(state) == list(range(len(params)))
    for i, p in enumerate(params):
        torch.testing.assert_close(state[i]["exp_avg"], p.detach() * 2, atol=0, rtol=0)
        torch.testing.assert_close(state[i]["exp_avg_sq"], p.detach() ** 2, atol=0, rtol=0)
    opt = torch.optim.Adam(G.parameters(), lr=1e-4)
    opt.load_state_dict(ckpt["optim"]["G"])
    G(torch.randn(1, 64)).mean().backward()
    opt.step()
    assert opt.param_groups[0]["betas"] == (0.0, 0.9900000009949831)   # the official TTUR settings come along


@pytest.mark.parametrize("name, kind, keep_split", [c for c in CASES if c[0] != "stylenat_legacy_tiny" or c[2]])
def test_parameter_order_is_the_official_order(name, kind, keep_split, tmp_path):
    """Where the layout is kept, our registration order equals the official one (Adam indices line up)."""
    import re

    container = load_official_container(FIXTURES / f"{name}.pt")
    buffers = ("relative_position_index", "attn_mask2", "_float_tensor", "upsample.kernel")
    official = [k for k in container["g"] if not k.endswith(buffers)]
    if kind == "styleswin":
        official = [re.sub(r"^(layers\.\d+\.blocks\.\d+\.)(qkv|proj|attn)\.", r"\1attn.\2.", k) for k in official]
    G = checkpoint.build_generator(converted(name, kind, tmp_path, keep_split_heads=keep_split))
    assert [n for n, _ in G.named_parameters()] == official


def test_refuses_pickled_objects_other_than_namespace(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    bad = tmp_path / "bad.pt"
    torch.save({"g_ema": {}, "args": Payload()}, bad)
    with pytest.raises(CheckpointError, match=r"refused to unpickle '(posix|os)\.makedirs'"):
        import_official(bad, "stylenat")
    assert not marker.exists()
    torch.save({"g_ema": {}, "args": argparse.Namespace(size=32), "extra": torch.nn.Linear(2, 2)}, bad)
    with pytest.raises(CheckpointError, match="refused to unpickle 'torch.nn.modules.linear.Linear'"):
        load_official_container(bad)


def _fixture_dict(name="stylenat_hydra_tiny"):
    return load_official_container(FIXTURES / f"{name}.pt")


def test_unexpected_missing_and_misshapen_keys_are_named():
    ck = _fixture_dict()
    ck["g_ema"]["layers.2.blocks.0.attn.extra_table"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"g_ema: unexpected key 'layers.2.blocks.0.attn.extra_table'"):
        import_official(ck, "stylenat")
    ck = _fixture_dict()
    del ck["g"]["layers.3.blocks.1.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"\bg: missing key 'layers.3.blocks.1.mlp.fc2.bias'"):
        import_official(ck, "stylenat")
    ck = _fixture_dict()
    ck["g_ema"]["layers.2.upsample.reduction.weight"] = torch.zeros(64, 63)
    with pytest.raises(CheckpointError, match=r"key 'layers.2.upsample.reduction.weight' has shape \(64, 63\)"):
        import_official(ck, "stylenat")
    ck = _fixture_dict()
    ck["g_ema"]["layers.3.blocks.0.attn.rpb.1"] = torch.zeros(1, 7, 7)
    with pytest.raises(CheckpointError, match=r"layers.3.blocks.0.attn.rpb"):
        import_official(ck, "stylenat")
    ck = _fixture_dict()
    ck["d"]["convs.0.conv1.1.bias"] = torch.zeros(31)
    with pytest.raises(CheckpointError, match=r"d: key 'convs.0.conv1.1.bias' has shape \(31,\)"):
        import_official(ck, "stylenat")
    ck = _fixture_dict()
    ck["g_ema"]["layers.0.blocks.0.attn.relative_position_index"] = \
        ck["g_ema"]["layers.0.blocks.0.attn.relative_position_index"].flip(0)
    with pytest.raises(CheckpointError, match="buffer 'layers.0.blocks.0.attn.relative_position_index' differs"):
        import_official(ck, "stylenat")


def test_wrong_kind_size_and_container_are_clear_errors():
    with pytest.raises(ConfigError, match="use --from styleswin"):  # the wrong --from: a usage error (exit 2)
        import_official(_fixture_dict("styleswin_tiny"), "stylenat")
    with pytest.raises(ConfigError, match="use --from stylenat"):
        import_official(_fixture_dict(), "styleswin")
    with pytest.raises(CheckpointError, match="--size is 256, but g_ema has 4 levels"):
        import_official(_fixture_dict(), "stylenat", size=256)
    with pytest.raises(CheckpointError, match="missing key 'g_ema'"):
        import_official({"g": {}}, "stylenat")
    ck = _fixture_dict()
    ck["args"].kernels = [[3], [5], [3], [3, 3, 3]]          # the 32x32 tables say [3, 5, 3]
    with pytest.raises(CheckpointError, match=r"key 'layers.3.blocks.0.attn.rpb.0': tables"):
        import_official(ck, "stylenat")


def test_newer_stylenat_container_layout(tmp_path):
    """StyleNAT HEAD's src/train.py layout: state_dicts / optim_dicts and the Hydra config as a nested dict."""
    old = _fixture_dict()
    a = vars(old["args"])
    config = {"size": 32, "current_iteration": 125_000,
              "generator": {k: a[k] for k in ("style_dim", "n_mlp", "lr_mlp", "mlp_ratio", "min_heads", "kernels",
                                                "dilations", "qkv_bias", "qk_scale", "channel_multiplier")},
              "discriminator": {"channel_multiplier": 2, "lr": 2e-4, "reg_every": 16, "sn": True},
              "training": {"iter": 1_000_000, "batch": 8, "use_flip": True, "ttur": True, "r1": 10.0}}
    new = {"args": config, "state_dicts": {k: old[k] for k in ("g", "d", "g_ema")},
           "optim_dicts": {k: old[k] for k in ("g_optim", "d_optim")}, "lr_dicts": {}, "eval_info": {}}
    path = tmp_path / "125000.pt"
    torch.save(new, path)
    ckpt = import_official(path, "stylenat")
    assert ckpt["progress"]["step"] == 125_000 and ckpt["recipe"]["train"]["batch_per_gpu"] == 8
    ex = expected("stylenat_hydra_tiny")
    with torch.no_grad():
        torch.testing.assert_close(checkpoint.build_generator(ckpt)(ex["z"]), ex["images"], atol=1e-5, rtol=0)


def test_step_from_filename():
    assert step_from_filename("FFHQ256_940k_flip.pt") == 940_000
    assert step_from_filename("FFHQ1024_700k.pt") == 700_000
    assert step_from_filename("checkpoints/000500.pt") == 500
    assert step_from_filename("FFHQ_256.pt") is None


def test_cli_round_trip(tmp_path, capsys):
    out = tmp_path / "FFHQ_converted.pt"
    with pytest.raises(SystemExit) as exc:
        main(["import", str(FIXTURES / "stylenat_legacy_tiny.pt"), "--from", "stylenat", "--out", str(out),
              "--step", "940000", "--json"])
    assert exc.value.code in (0, None)
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "stylenat" and result["resolution"] == 32 and result["step"] == 940_000
    ckpt = checkpoint.load(out)
    assert ckpt["progress"] == {"step": 940_000, "images_seen": 940_000 * 4}
    with pytest.raises(SystemExit) as exc:
        main(["import", str(FIXTURES / "stylenat_legacy_tiny.pt"), "--from", "stylenat", "--out", str(out)])
    assert exc.value.code == 2 and "file exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["import", str(tmp_path / "missing.pt"), "--from", "stylenat", "--out", str(tmp_path / "x.pt")])
    assert exc.value.code == 1 and "file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("field, value", [("batch", 0), ("batch", "8"), ("iter", "x"), ("iter", 1.5),
                                          ("G_lr", "fast"), ("bcr", 1)])
def test_invalid_official_args_are_refused_not_replaced_by_defaults(field, value):
    ck = _fixture_dict()
    setattr(ck["args"], field, value)
    with pytest.raises(CheckpointError, match=rf"official args.{field}: expected .*, got {re.escape(repr(value))}; "
                                              rf"correct it with --arg {field}=VALUE"):
        import_official(ck, "stylenat")
    # the way out the message names works
    good = {"batch": 4, "iter": 100, "G_lr": 0.001, "bcr": True}[field]
    ckpt = import_official(ck, "stylenat", args_override={field: good})
    assert ckpt["extra"]["import"]["official_args"][field] == good


def test_import_out_directory_and_help_text(tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["import", str(FIXTURES / "stylenat_hydra_tiny.pt"), "--from", "stylenat", "--out",
              str(tmp_path / "dir"), "--overwrite"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "is a directory" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    assert "Training step (default: from the file name" in text and "Training step ." not in text
