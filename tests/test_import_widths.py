"""`nat-gan import` of official snapshots whose channel table is not a StyleGAN2 default (and the shared checks
of every conditional NVlabs fixture: sample/fid/train --init, poisoned module sources).

The fixtures (tests/fixtures/official/*-widths, stylegan3-stylegan2, *-cond; see its README) were written by
the official code with ``channel_base``/``channel_max`` pairs whose widths follow no
``min(channel_max, 16384 m / res)`` rule with an integer ``m`` (nat-gan refused them before), two of them
class-conditional (``c_dim = 10``). The widths must
be read from the weight shapes, stored as explicit lists in the model config, and reproduce the official
images and D logits; ``sample``, ``fid`` and ``train --init`` must work on the imported file, and the
security guarantees of the NVlabs reader hold for these files too.
"""

import math
from pathlib import Path

import pytest
import torch

from natgan import checkpoint
from natgan.errors import CheckpointError, ConfigError
from natgan.importers import import_checkpoint
from natgan.importers.nvlabs_pickle import read_snapshot
from natgan.importers.nvlabs_records import PersistentRecord
from natgan.models import get_spec
from test_import_baselines import _cli, _nvlabs_pickle, _plain_dicts, _tree

FIXTURES = Path(__file__).resolve().parent / "fixtures/official"
SNAPSHOT = "network-snapshot-000012.pkl"
# fixture folder -> (--from auto's answer, widths at 4, 8, ... px as the official table min(base // res, max) gives)
STYLEGAN2 = {"stylegan2-ada-widths": [16, 16, 8, 4],      # stylegan2-ada-pytorch, channel_base 128, channel_max 16
             "stylegan3-stylegan2": [16, 16, 16, 8]}      # stylegan3 --cfg=stylegan2, channel_base 256, channel_max 16


def _expected(folder):
    return torch.load(FIXTURES / folder / "expected.pt", map_location="cpu", weights_only=True)


def _imported(folder, tmp_path):
    out = tmp_path / f"{folder}.pt"
    assert _cli(["import", str(FIXTURES / folder / SNAPSHOT), "--from", "auto", "--out", str(out)]) == 0
    return out, checkpoint.load(out)


def _imported_stylegan2(folder, tmp_path):
    """(expected, checkpoint, model config) of an NVlabs fixture imported with ``--from auto`` as stylegan2."""
    ex = _expected(folder)
    _, ckpt = _imported(folder, tmp_path)
    assert ckpt["model"]["name"] == "stylegan2" and ckpt["extra"]["import"]["from"] == "stylegan2-ada"
    return ex, ckpt, ckpt["model"]["config"]


def _discriminator(ckpt):
    spec = get_spec(ckpt["model"]["name"])
    _, D = spec.builder(spec.make_config(ckpt["model"]["config"]))
    D.load_state_dict(ckpt["weights"]["D"])
    return D.eval()


def _assert_official(ckpt, G, w, ex, c=None):
    """Images (plain and psi 0.7 toward the stored w_avg) and D logits equal the official ones to 1e-5."""
    D = _discriminator(ckpt)
    torch.testing.assert_close(G.synthesis(w, noise_mode="const"), ex["images"], atol=1e-5, rtol=0)
    torch.testing.assert_close(G.synthesis(torch.lerp(ckpt["extra"]["w_avg"], w, 0.7), noise_mode="const"),
                               ex["images_trunc07"], atol=1e-5, rtol=0)
    torch.testing.assert_close(D(ex["images"]) if c is None else D(ex["images"], c), ex["d_logits"], atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("folder", sorted(STYLEGAN2))
def test_nvlabs_custom_widths_reproduce_the_official_images(folder, tmp_path):
    ex, ckpt, cfg = _imported_stylegan2(folder, tmp_path)
    widths = STYLEGAN2[folder]
    assert cfg["channels"] == widths == [ex["config"]["widths"][r] for r in (4, 8, 16, 32)]
    assert cfg["d_channels"] is None                                   # D built from the same table
    G = checkpoint.build_generator(ckpt)
    with torch.no_grad():
        w = G.mapping(ex["z"])
        torch.testing.assert_close(w, ex["ws"], atol=1e-6, rtol=0)
        _assert_official(ckpt, G, w, ex)
        G_raw = checkpoint.build_generator(ckpt, ema=False)               # 'G' differs from 'G_ema'
        assert (G_raw.synthesis(w, noise_mode="const") - ex["images"]).abs().max() > 0.05


def test_ganformer_custom_widths_reproduce_the_official_images(tmp_path):
    ex = _expected("ganformer-widths")
    _, ckpt = _imported("ganformer-widths", tmp_path)
    cfg = ckpt["model"]["config"]
    assert ckpt["model"]["name"] == "ganformer" and ckpt["extra"]["import"]["from"] == "ganformer"
    assert cfg["channels"] == [16, 16, 8] == [ex["config"]["widths"][r] for r in (4, 8, 16)]
    assert cfg["d_channels"] is None
    G = checkpoint.build_generator(ckpt)
    b, k, layers, d = ex["ws"].shape
    with torch.no_grad():
        w = G.mapping(ex["z"].reshape(b, k * d))
        torch.testing.assert_close(w, ex["ws"].transpose(1, 2).reshape(b, layers, k * d), atol=1e-5, rtol=0)
        _assert_official(ckpt, G, w, ex)


def test_a_discriminator_with_its_own_table_is_stored_as_d_channels(tmp_path, monkeypatch):
    """The official constructors take G's and D's channel_base/channel_max separately; a D narrower than G
    imports into ``model.d_channels`` with its logits unchanged."""
    snapshot = read_snapshot(FIXTURES / "stylegan2-ada-widths" / SNAPSHOT)
    widened = read_snapshot(FIXTURES / "stylegan3-stylegan2" / SNAPSHOT)     # its D: 16, 16, 16, 8
    tree = {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()}
    tree["D"] = _tree(widened["D"])
    tree["D"]["class_name"] = snapshot["D"].class_name
    path = _nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch)
    _, ckpt = import_checkpoint(path, "auto")
    cfg = ckpt["model"]["config"]
    assert cfg["channels"] == [16, 16, 8, 4] and cfg["d_channels"] == [16, 16, 16, 8]
    ex = _expected("stylegan3-stylegan2")
    with torch.no_grad():
        torch.testing.assert_close(_discriminator(ckpt)(ex["images"]), ex["d_logits"], atol=1e-5, rtol=0)


def test_conditional_snapshot_reproduces_the_official_images_and_logits(tmp_path):
    """stylegan2-ada's c_dim > 0: ``mapping.embed`` -> the label embedding concatenated at the mapping input,
    D's label mapping network -> the projection head's, ``b4.out`` -> the cmap features."""
    ex = _expected("stylegan2-ada-cond")
    _, ckpt = _imported("stylegan2-ada-cond", tmp_path)
    cfg = ckpt["model"]["config"]
    assert (cfg["num_classes"], cfg["channels"], cfg["style_dim"]) == (10, [16, 16, 8, 4], 16)
    G = checkpoint.build_generator(ckpt)
    D = _discriminator(ckpt)
    labels = ex["c"].argmax(1)
    assert labels.tolist() == [0, 3, 7, 9]
    with torch.no_grad():
        for c in (ex["c"], labels):                                     # one-hot vectors or class indices
            w = G.mapping(ex["z"], c)
            torch.testing.assert_close(w, ex["ws"], atol=1e-6, rtol=0)
            _assert_official(ckpt, G, w, ex, c)
        # the label matters: another class gives another image and another logit
        other = G.synthesis(G.mapping(ex["z"], (labels + 1) % 10), noise_mode="const")
        assert (other - ex["images"]).abs().max() > 0.05
        assert (D(ex["images"], (labels + 1) % 10) - ex["d_logits"]).abs().max() > 1e-3
    assert any("class-conditional (10 classes)" in a for a in ckpt["extra"]["import"]["assumptions"])


def test_conditional_ganformer_reproduces_the_official_images_and_logits(tmp_path, capsys):
    """GANformer's c_dim > 0: ``mapping.embed`` widens the global latent's mapping input (official non-residual
    mapping), D's ``b4.out`` emits one logit per class and the label picks it (no label mapping network)."""
    ex = _expected("ganformer-cond")
    out, ckpt = _imported("ganformer-cond", tmp_path)
    cfg = ckpt["model"]["config"]
    assert (cfg["num_classes"], cfg["channels"], cfg["mapping_resnet"]) == (10, [16, 16, 8], False)
    G = checkpoint.build_generator(ckpt)
    b, k, layers, d = ex["ws"].shape
    labels = ex["c"].argmax(1)
    with torch.no_grad():
        for c in (ex["c"], labels):
            w = G.mapping(ex["z"].reshape(b, k * d), c)
            torch.testing.assert_close(w, ex["ws"].transpose(1, 2).reshape(b, layers, k * d), atol=1e-5, rtol=0)
            _assert_official(ckpt, G, w, ex, c)
        other = G.synthesis(G.mapping(ex["z"].reshape(b, k * d), (labels + 1) % 10), noise_mode="const")
        assert (other - ex["images"]).abs().max() > 0.05
    assert _cli(["sample", "--ckpt", str(out), "--seeds", "0-2", "--class", "7", "--outdir", str(tmp_path / "s"),
                 "--device", "cpu"]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 3
    assert _cli(["sample", "--ckpt", str(out), "--seeds", "0", "--class", "10", "--outdir", str(tmp_path / "t"),
                 "--device", "cpu"]) != 0                                   # classes are 0..9
    assert "10" in capsys.readouterr().err and not (tmp_path / "t").exists()


@pytest.fixture(scope="module")
def digits32(tmp_path_factory):
    from natgan.data import prepare_digits

    out = tmp_path_factory.mktemp("data") / "digits32.lmdb"
    prepare_digits(out, sizes=[32], progress=False)                      # with the 10 digit labels
    return out


@pytest.mark.parametrize("folder", ["stylegan2-ada-widths", "stylegan2-ada-cond", "stylegan2-ada-cifar",
                                    "stylegan2-ada-cifar-legacy"])
def test_imported_file_works_with_sample_fid_and_train_init(folder, digits32, tmp_path, capsys, monkeypatch):
    out, ckpt = _imported(folder, tmp_path)
    cfg = ckpt["model"]["config"]
    conditional = cfg["num_classes"] > 0
    assert _cli(["sample", "--ckpt", str(out), "--seeds", "0-1", "--trunc", "0.7", "--outdir", str(tmp_path / "s"),
                 "--device", "cpu", *(["--class", "3"] if conditional else [])]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 2

    import natgan.metrics as metrics
    from natgan.errors import NatGanError

    seen = {}

    def capture(G, reference, **kwargs):                  # what fid would score, without Inception
        seen.update(kwargs, G=G)
        raise NatGanError("captured")

    monkeypatch.setattr(metrics, "evaluate_generator", capture)
    assert _cli(["fid", "--ckpt", str(out), "--data", str(digits32), "--no-record", "--device", "cpu"]) == 1
    assert "captured" in capsys.readouterr().err and seen["G"].num_classes == (10 if conditional else 0)

    from natgan.train import resolve_init, train
    from natgan.train.trainer import Trainer

    recipe_path = tmp_path / "finetune.toml"
    recipe_path.write_text(f'[data]\npath = "{digits32}"\nworkers = 0\n[train]\nbatch = 4\niterations = 2\n'
                           f'lr_decay_start = 2\ncheckpoint_every = 2\nsample_every = 2\nlog_every = 1\n'
                           f'pl_weight = 0.0\n')
    recipe, init_ck, _ = resolve_init(recipe_path=recipe_path, overrides=[], outdir=tmp_path / "ft",
                                      init=str(out), data_override=[])
    assert recipe.model.channels == cfg["channels"]
    assert (recipe.model.num_classes, recipe.model.d_architecture) == (cfg["num_classes"], cfg["d_architecture"])
    t = Trainer(recipe, tmp_path / "ft", init_from=init_ck, show_progress=False)
    for name, module in (("G", t.G), ("G_ema", t.G_ema), ("D", t.D)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, ckpt["weights"][name][key]), (name, key)
    result = train(recipe, tmp_path / "ft2", init_from=init_ck, show_progress=False)
    assert result.step == 2
    trained = checkpoint.load(tmp_path / "ft2" / "latest.pt")["model"]["config"]
    assert {k: trained[k] for k in ("channels", "d_architecture", "mbstd_group")} == \
        {k: cfg[k] for k in ("channels", "d_architecture", "mbstd_group")}


def test_conditional_refusals_name_the_reason(tmp_path, monkeypatch):
    snapshot = read_snapshot(FIXTURES / "stylegan2-ada-cond" / SNAPSHOT)
    tree = {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()}
    base = tree["D"]["state"]["_init_kwargs"]
    tree["D"]["state"]["_init_kwargs"] = dict(base, mapping_kwargs={"num_layers": 4})
    with pytest.raises(CheckpointError, match=r"D: mapping_kwargs.num_layers = 4 but the file holds 8 label mapping"):
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / "a.pkl", monkeypatch), "auto")
    tree["D"]["state"]["_init_kwargs"] = dict(base, mapping_kwargs={"activation": "relu"})
    with pytest.raises(CheckpointError, match=r"D mapping_kwargs.activation = 'relu' \(only 'lrelu'\).*cannot express"):
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / "a2.pkl", monkeypatch), "auto")
    tree["D"]["state"]["_init_kwargs"] = dict(base, cmap_dim=8)
    with pytest.raises(CheckpointError, match=r"D cmap_dim = 8 differs from the 4x4 width 16 .*cannot express"):
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / "a3.pkl", monkeypatch), "auto")
    tree["D"]["state"]["_init_kwargs"] = dict(base, c_dim=5)
    with pytest.raises(CheckpointError, match=r"G has c_dim = 10 but D has c_dim = 5"):
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / "b.pkl", monkeypatch), "auto")
    tree["D"]["state"]["_init_kwargs"] = base
    g_kwargs = tree["G_ema"]["state"]["_init_kwargs"]
    tree["G_ema"]["state"]["_init_kwargs"] = dict(g_kwargs, c_dim="10")
    with pytest.raises(CheckpointError, match=r"c_dim is '10', not a class count"):
        import_checkpoint(_nvlabs_pickle(tree, tmp_path / "c.pkl", monkeypatch), "auto")


@pytest.mark.parametrize("folder", ["stylegan2-ada-widths", "stylegan3-stylegan2", "ganformer-widths",
                                    "stylegan2-ada-cond", "ganformer-cond", "stylegan2-ada-cifar",
                                    "stylegan2-ada-skip", "stylegan2-ada-clamp", "stylegan2-ada-cifar-legacy"])
def test_poisoned_record_source_never_runs_on_these_paths(folder, tmp_path, monkeypatch):
    """The records' ``module_src`` is data: a poisoned copy still imports (same images), nothing runs."""
    marker = tmp_path / "PWNED"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    snapshot = read_snapshot(FIXTURES / folder / SNAPSHOT)
    tree = {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()
            if not (k == "G_ema" and "Gs" in snapshot)}

    def poison(node):
        node["module_src"] = payload + node["module_src"]
        for child in node["state"]["_modules"].values():
            if isinstance(child, dict) and "module_src" in child:
                poison(child)

    for value in tree.values():
        if isinstance(value, dict) and "module_src" in value:
            poison(value)
    path = _nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch)
    _, ckpt = import_checkpoint(path, "auto")
    ex = _expected(folder)
    G = checkpoint.build_generator(ckpt)
    with torch.no_grad():
        z = ex["z"].reshape(ex["z"].shape[0], -1)
        w = G.mapping(z, ex["c"]) if "c" in ex and ex["c"].shape[1] else G.mapping(z)
        torch.testing.assert_close(G.synthesis(w, noise_mode="const"), ex["images"], atol=1e-5, rtol=0)
    assert not marker.exists()
    exec(compile(payload, "<payload>", "exec"))                              # control: the payload is live
    assert marker.exists()


# ------------------------------------------------------------------------------------------ model configs

@pytest.mark.parametrize("name,base", [
    ("stylegan2", {"resolution": 32, "style_dim": 16, "n_mlp": 2, "channel_max": 16}),
    ("ganformer", {"resolution": 16, "latent_dim": 16, "components": 2, "channel_max": 16}),
])
def test_explicit_channels_equal_to_the_table_build_the_same_model(name, base):
    """``channels`` only states widths: the table's own widths give the same parameters, draws and outputs."""
    spec = get_spec(name)
    widths = [16] * (int(math.log2(base["resolution"])) - 1)
    pairs = []
    for overrides in (base, {**base, "channels": widths}):
        torch.manual_seed(0)
        pairs.append(spec.builder(spec.make_config(overrides)))
    (ga, da), (gb, db) = pairs
    for a, b in ((ga, gb), (da, db)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name,base", [("stylegan2", {"resolution": 32}), ("ganformer", {"resolution": 32})])
def test_channel_lists_of_the_wrong_length_are_refused(name, base):
    spec = get_spec(name)
    for key in ("channels", "d_channels"):
        with pytest.raises(ConfigError, match=rf"key 'model.{key}': expected 4 widths \(one per level 4, 8, 16, 32\)"):
            spec.make_config({**base, key: [16, 16, 16]})
    with pytest.raises(ConfigError, match="model.channels"):
        spec.make_config({**base, "channels": [16, 16, 0, 16]})


def test_ganformer_heads_must_divide_explicit_widths():
    with pytest.raises(ConfigError, match="model.heads.*12 channels"):
        get_spec("ganformer").make_config({"resolution": 16, "latent_dim": 16, "heads": 8, "channels": [16, 16, 12]})


def test_truncated_width_list_in_a_snapshot_is_a_one_line_error(tmp_path, monkeypatch):
    snapshot = read_snapshot(FIXTURES / "stylegan2-ada-widths" / SNAPSHOT)
    tree = {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()}
    del tree["D"]["state"]["_modules"]["b16"]
    path = _nvlabs_pickle(tree, tmp_path / SNAPSHOT, monkeypatch)
    with pytest.raises(CheckpointError, match=r"D: blocks b32, b8, b4 are not b32, b16, ..., b4"):
        import_checkpoint(path, "auto")


def test_import_notes_print_bracketed_text_verbatim(tmp_path, capsys, monkeypatch):
    """The notes name recipe tables (``[train]``): printed as rich markup they vanished ("the recipe's  is")."""
    monkeypatch.setenv("COLUMNS", "400")
    _imported("stylegan2-ada-cifar", tmp_path)
    out = capsys.readouterr().out
    assert "the recipe's [train] is StyleGAN2 config-f's" in out
