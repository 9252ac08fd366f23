"""`nat-gan import` of the baselines' files: rosinality StyleGAN2 .pt, stylegan2-ada / GANformer NVlabs pickles.

Fixtures (tests/fixtures/official/*, see its README) were made by running the official code on CPU; the
``expected.pt`` files hold its images and D logits for fixed latents. The security tests prove with marker
files that nothing a pickle carries is ever run.
"""

import io
import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from shared_fixtures import OFFICIAL, requires_official
from natgan import checkpoint, recipe
from natgan.cli import main
from natgan.errors import CheckpointError
from natgan.importers import detect_format, import_checkpoint
from natgan.importers.nvlabs_pickle import read_pickle, read_snapshot
from natgan.importers.nvlabs_records import PersistentRecord
from natgan.models import get_spec

FIXTURES = Path(__file__).resolve().parent / "fixtures/official"
ROS = FIXTURES / "rosinality"
ADA = FIXTURES / "stylegan2-ada"
ADA_PKL = ADA / "network-snapshot-000012.pkl"


def _cli(args):
    """Run the CLI, return its exit code (0 when it returns normally)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code or 0


def _expected(folder):
    return torch.load(folder / "expected.pt", map_location="cpu", weights_only=True)


def _round_trip(path, kind, tmp_path):
    resolved, ckpt = import_checkpoint(path, kind)
    return resolved, checkpoint.load(checkpoint.save(ckpt, tmp_path / "imported.pt"))


def _discriminator(ckpt):
    spec = get_spec(ckpt["model"]["name"])
    _, D = spec.builder(spec.make_config(ckpt["model"]["config"]))
    D.load_state_dict(ckpt["weights"]["D"])
    return D.eval()


# ------------------------------------------------------------------------------------------ rosinality

@pytest.mark.parametrize("name", ["000003.pt", "converted.pt"])
def test_rosinality_reproduces_the_official_images(name, tmp_path):
    ex = _expected(ROS)
    kind, ckpt = _round_trip(ROS / name, "auto", tmp_path)
    assert kind == "rosinality" and ckpt["model"]["name"] == "stylegan2"
    G = checkpoint.build_generator(ckpt)
    with torch.no_grad():
        torch.testing.assert_close(G.synthesis(G.mapping(ex["z"]), noise_mode="const"), ex["images"], atol=1e-5, rtol=0)
        w_avg = ckpt["extra"]["w_avg"] if name == "converted.pt" else ex["latent_avg"]
        torch.testing.assert_close(G.synthesis(torch.lerp(w_avg, G.mapping(ex["z"]), 0.7), noise_mode="const"),
                                   ex["images_trunc07"], atol=1e-5, rtol=0)
        G64 = G.double()
        torch.testing.assert_close(G64.synthesis(G64.mapping(ex["z"].double()), noise_mode="const"),
                                   ex["images_float64"], atol=1e-12, rtol=0)


def test_rosinality_training_checkpoint_carries_everything(tmp_path):
    ex = _expected(ROS)
    _, ckpt = _round_trip(ROS / "000003.pt", "rosinality", tmp_path)
    assert set(ckpt["weights"]) == {"G", "G_ema", "D"} and set(ckpt["optim"]) == {"G", "D"}
    assert ckpt["progress"]["step"] == 3                                           # from 000003.pt
    cfg = ckpt["model"]["config"]
    assert (cfg["resolution"], cfg["style_dim"], cfg["n_mlp"], cfg["channels"], cfg["d_channels"]) == \
        (32, 16, 4, [16, 16, 16, 16], None)                                    # widths read from the shapes
    with torch.no_grad():
        D = _discriminator(ckpt)
        torch.testing.assert_close(D(ex["images"]), ex["d_logits"], atol=1e-5, rtol=0)
        torch.testing.assert_close(D.double()(ex["images_float64"]), ex["d_logits_float64"], atol=1e-12, rtol=0)
        G_raw = checkpoint.build_generator(ckpt, ema=False)                        # 'g' differs from 'g_ema'
        assert (G_raw.synthesis(G_raw.mapping(ex["z"]), noise_mode="const") - ex["images"]).abs().max() > 0.1
    # Adam moments follow their parameters (the fixture ran 3 official training iterations)
    official = torch.load(ROS / "000003.pt", weights_only=False)
    names = [k for k in official["g"] if not k.startswith("noises.") and not k.endswith(".kernel")]
    state = ckpt["optim"]["G"]["state"]
    for i in range(len(names)):
        torch.testing.assert_close(state[i]["exp_avg_sq"], official["g_optim"]["state"][i]["exp_avg_sq"])
    assert ckpt["optim"]["G"]["param_groups"][0]["lr"] == pytest.approx(0.002 * 4 / 5)
    r = recipe.from_dict(ckpt["recipe"])
    assert (r.train.g_lr, r.train.d_lr, r.train.r1, r.train.r1_every, r.train.pl_weight, r.train.g_reg_every,
            r.train.style_mixing, r.train.batch, r.train.iterations, r.train.ttur, r.train.bcr) == \
        (0.002, 0.002, 10.0, 16, 2.0, 4, 0.9, 4, 1000, False, False)
    # the optimizer rebuilt by nat-gan's schedule has the official lazy-regularisation lr/betas
    from natgan.train import schedule
    assert schedule.g_settings(r.train).lr == pytest.approx(official["g_optim"]["param_groups"][0]["lr"])
    assert schedule.d_settings(r.train).betas == pytest.approx(official["d_optim"]["param_groups"][0]["betas"])


def test_rosinality_refusals(tmp_path):
    official = torch.load(ROS / "000003.pt", weights_only=False)
    from natgan.importers.rosinality import import_rosinality

    swagan = dict(official, args=dict(vars(official["args"]), arch="swagan"))
    with pytest.raises(CheckpointError, match="args.arch is 'swagan'"):
        import_rosinality(swagan)
    odd = {k: v.clone() for k, v in official["g_ema"].items()}
    odd["input.input"] = torch.zeros(1, 24, 4, 4)                    # 24 wide const, 16 wide convs
    with pytest.raises(CheckpointError, match=r"conv1.conv.weight.*shape"):
        import_rosinality({"g_ema": odd})
    extra = dict(official["g_ema"], **{"style.9.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="style.5.weight|style.9.weight"):
        import_rosinality({"g_ema": extra})
    with pytest.raises(CheckpointError, match="--size is 64"):
        import_rosinality(official, 64)


# ------------------------------------------------------------------------------------------ stylegan2-ada

def test_stylegan2_ada_reproduces_the_official_images_and_logits(tmp_path):
    ex = _expected(ADA)
    kind, ckpt = _round_trip(ADA_PKL, "auto", tmp_path)
    assert kind == "stylegan2-ada" and ckpt["model"]["name"] == "stylegan2"
    cfg = ckpt["model"]["config"]
    assert (cfg["resolution"], cfg["style_dim"], cfg["n_mlp"], cfg["channels"],
            cfg["mbstd_group"]) == (32, 16, 2, [16, 16, 16, 16], 4)
    G = checkpoint.build_generator(ckpt)
    with torch.no_grad():
        w = G.mapping(ex["z"])
        torch.testing.assert_close(w, ex["ws"], atol=1e-6, rtol=0)
        torch.testing.assert_close(G.synthesis(w, noise_mode="const"), ex["images"], atol=1e-5, rtol=0)
        torch.testing.assert_close(ckpt["extra"]["w_avg"], ex["w_avg"])
        torch.testing.assert_close(G.synthesis(torch.lerp(ckpt["extra"]["w_avg"], w, 0.7), noise_mode="const"),
                                   ex["images_trunc07"], atol=1e-5, rtol=0)
        torch.testing.assert_close(_discriminator(ckpt)(ex["images"]), ex["d_logits"], atol=1e-5, rtol=0)
        G_raw = checkpoint.build_generator(ckpt, ema=False)
        assert (G_raw.synthesis(w, noise_mode="const") - ex["images"]).abs().max() > 0.05
    info = ckpt["extra"]["import"]
    assert info["ada_p"] == pytest.approx(0.125) and ckpt["optim"] == {}
    assert recipe.from_dict(ckpt["recipe"]).data.flip is True                   # training_set_kwargs.xflip
    assert ckpt["progress"]["step"] == 12_000 // 32
    assert cfg["conv_clamp"] == 256                          # train.py's fp16 guard, computed as the official
    assert not any("conv_clamp" in note for note in info["assumptions"])


def _plain_dicts(value):
    """EasyDicts (read as a dict subclass) back to plain dicts, so the tree re-pickles with builtins only."""
    if isinstance(value, dict):
        kind = dict if type(value).__name__ == "_EasyDict" else type(value)
        return kind((k, _plain_dicts(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_dicts(v) for v in value)
    return value


def _tree(record):
    """A record tree as plain nested dicts, to edit and re-pickle in the NVlabs form."""
    state = {k: _plain_dicts(v) for k, v in record.state.items()}
    state["_modules"] = {k: _tree(v) if isinstance(v, PersistentRecord) else v
                         for k, v in (record.state.get("_modules") or {}).items()}
    return {"class_name": record.class_name, "module_src": record.module_src, "state": state}


def _nvlabs_pickle(snapshot_tree, path, monkeypatch):
    """Write ``snapshot_tree`` as the official persistence module would (records -> _reconstruct_persistent_obj)."""
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):                                        # never called by nat-gan
        raise AssertionError("only referenced by name")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)

    class Record:
        def __init__(self, tree):
            state = dict(tree["state"])
            state["_modules"] = {k: Record(v) if isinstance(v, dict) and "module_src" in v else v
                                 for k, v in state["_modules"].items()}
            self.meta = {"type": "class", "version": 4, "module_src": tree["module_src"],
                         "class_name": tree["class_name"], "state": state}

        def __reduce__(self):
            return _reconstruct_persistent_obj, (self.meta,)

    data = {k: Record(v) if isinstance(v, dict) and "module_src" in v else v for k, v in snapshot_tree.items()}
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


# ------------------------------------------------------------------------------------------ security

class _SystemPayload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_reduce_payload_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "network-snapshot-000000.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _SystemPayload(f"touch {marker}")}))
    with pytest.raises(CheckpointError, match=r"refused to unpickle '(posix|os|nt)\.system'"):
        read_pickle(evil)
    code = _cli(["import", str(evil), "--from", "auto", "--out", str(tmp_path / "out.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "system" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    # control: the same payload does run under plain pickle, so the test could fail
    pickle.loads(evil.read_bytes())
    assert marker.exists()


def test_storage_bytes_are_read_with_weights_only(tmp_path):
    marker = tmp_path / "PWNED"
    inner = io.BytesIO()
    torch.save({"x": _SystemPayload(f"touch {marker}")}, inner)
    from torch.storage import _load_from_bytes

    class Storage:
        def __reduce__(self):
            return _load_from_bytes, (inner.getvalue(),)

    evil = tmp_path / "nested.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Storage()}))
    with pytest.raises(CheckpointError, match=r"refused to unpickle '(posix|os|nt)\.system' inside a storage"):
        read_pickle(evil)
    assert not marker.exists()


def test_persistence_record_source_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    snapshot = read_snapshot(ADA_PKL)
    tree = {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()}

    def poison(node):
        node["module_src"] = payload + node["module_src"]
        for child in node["state"]["_modules"].values():
            if isinstance(child, dict) and "module_src" in child:
                poison(child)

    for key in ("G", "D", "G_ema", "augment_pipe"):
        poison(tree[key])
    path = _nvlabs_pickle(tree, tmp_path / "network-snapshot-000012.pkl", monkeypatch)
    ex = _expected(ADA)
    _, ckpt = import_checkpoint(path, "stylegan2-ada")                       # imports, from data alone
    G = checkpoint.build_generator(ckpt)
    with torch.no_grad():
        torch.testing.assert_close(G.synthesis(G.mapping(ex["z"]), noise_mode="const"), ex["images"], atol=1e-5, rtol=0)
    assert not marker.exists()
    # a record of a class nat-gan does not know is refused by name, still without running anything
    tree["G_ema"]["class_name"] = "Backdoor"
    path = _nvlabs_pickle(tree, tmp_path / "backdoor.pkl", monkeypatch)
    with pytest.raises(CheckpointError, match="'Backdoor'"):
        import_checkpoint(path, "stylegan2-ada")
    with pytest.raises(CheckpointError, match="Backdoor"):
        detect_format(path)
    assert not marker.exists()
    exec(compile(payload, "<payload>", "exec"))                              # control: the payload is live
    assert marker.exists()


def test_unsupported_configurations_are_refused_with_the_reason(tmp_path, monkeypatch):
    snapshot = read_snapshot(ADA_PKL)
    tree = {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()}
    tree["G_ema"]["state"]["_init_kwargs"] = dict(tree["G_ema"]["state"]["_init_kwargs"], c_dim=10)
    path = _nvlabs_pickle(tree, tmp_path / "conditional.pkl", monkeypatch)
    with pytest.raises(CheckpointError, match=r"c_dim = 10 but D has c_dim = 0"):   # kwargs and weights disagree
        import_checkpoint(path, "stylegan2-ada")


def test_cli_imports_samples_with_the_stored_truncation_centre(tmp_path, capsys):
    out = tmp_path / "ada.pt"
    assert _cli(["import", str(ADA_PKL), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["from"] == "stylegan2-ada" and result["model"] == "stylegan2" and result["w_avg"] is True
    from natgan.sampling import load_generator

    loaded = load_generator(out)
    torch.testing.assert_close(loaded.truncation_centre(), _expected(ADA)["w_avg"])
    assert _cli(["sample", "--ckpt", str(out), "--seeds", "0-1", "--trunc", "0.7", "--outdir", str(tmp_path / "s"),
                 "--device", "cpu"]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 2
    assert _cli(["import", str(ROS / "000003.pt"), "--from", "stylenat", "--out", str(tmp_path / "x.pt")]) == 1
    assert "g_ema" in capsys.readouterr().err


def test_fid_with_truncation_uses_the_stored_centre(tmp_path, capsys, monkeypatch):
    """`fid --trunc` truncates toward the imported w_avg (as `sample` does), not a freshly estimated one."""
    import natgan.metrics as metrics
    from natgan.errors import NatGanError

    out = tmp_path / "ada.pt"
    assert _cli(["import", str(ADA_PKL), "--out", str(out)]) == 0
    seen = {}

    def capture(G, reference, **kwargs):
        seen.update(kwargs)
        raise NatGanError("captured")

    monkeypatch.setattr(metrics, "evaluate_generator", capture)
    for trunc in ("0.7", "1"):
        assert _cli(["fid", "--ckpt", str(out), "--data", str(tmp_path), "--trunc", trunc, "--no-record",
                     "--device", "cpu"]) == 1
        assert "captured" in capsys.readouterr().err
        if trunc == "0.7":
            torch.testing.assert_close(seen["w_avg"], _expected(ADA)["w_avg"])
            assert seen["psi"] == 0.7
        else:
            assert seen["w_avg"] is None


# ------------------------------------------------------------------------------------------ GANformer

GF_PKL = FIXTURES / "ganformer/network-snapshot-000012.pkl"


def test_ganformer_reproduces_the_official_images_and_logits(tmp_path):
    ex = _expected(FIXTURES / "ganformer")
    kind, ckpt = _round_trip(GF_PKL, "auto", tmp_path)
    assert kind == "ganformer" and ckpt["model"]["name"] == "ganformer"
    cfg = ckpt["model"]["config"]
    assert (cfg["components"], cfg["latent_dim"], cfg["attention"], cfg["attn_max_res"], cfg["integration"]) == \
        (2, 16, "duplex_kmeans", 16, "mul")
    G = checkpoint.build_generator(ckpt)
    b, k, layers, d = ex["ws"].shape
    official_w = ex["ws"].transpose(1, 2).reshape(b, layers, k * d)      # [B, k, layers, d] -> ours
    with torch.no_grad():
        w = G.mapping(ex["z"].reshape(b, k * d))
        torch.testing.assert_close(w, official_w, atol=1e-5, rtol=0)
        torch.testing.assert_close(G.synthesis(w, noise_mode="const"), ex["images"], atol=1e-5, rtol=0)
        torch.testing.assert_close(G.synthesis(torch.lerp(ckpt["extra"]["w_avg"], w, 0.7), noise_mode="const"),
                                   ex["images_trunc07"], atol=1e-5, rtol=0)
        torch.testing.assert_close(_discriminator(ckpt)(ex["images"]), ex["d_logits"], atol=1e-5, rtol=0)
        G_raw = checkpoint.build_generator(ckpt, ema=False)                    # 'G' differs from 'Gs'
        assert (G_raw.synthesis(w, noise_mode="const") - ex["images"]).abs().max() > 0.05
    assert recipe.from_dict(ckpt["recipe"]).data.flip is True                  # dataset_args.mirror_augment


def test_ganformer_unsupported_options_are_refused(tmp_path, monkeypatch):
    snapshot = read_snapshot(GF_PKL)
    tree = {k: _tree(v) if isinstance(v, PersistentRecord) else _plain_dicts(v) for k, v in snapshot.items()
            if k != "G_ema"}
    kwargs = tree["Gs"]["state"]["_init_kwargs"]
    kwargs["synthesis_kwargs"] = dict(kwargs["synthesis_kwargs"], iterative=True)
    path = _nvlabs_pickle(tree, tmp_path / "iterative.pkl", monkeypatch)
    with pytest.raises(CheckpointError, match=r"synthesis_kwargs.iterative = True .*cannot express"):
        import_checkpoint(path, "ganformer")


SHARED = OFFICIAL


@requires_official
def test_auto_detection_of_every_format(tmp_path):
    assert detect_format(SHARED / "stylenat_hydra_tiny.pt") == "stylenat"
    assert detect_format(SHARED / "styleswin_tiny.pt") == "styleswin"
    assert detect_format(ROS / "converted.pt") == "rosinality"
    assert detect_format(ADA_PKL) == "stylegan2-ada"
    assert detect_format(GF_PKL) == "ganformer"
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="not an NVlabs network snapshot"):
        detect_format(junk)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not one of the known layouts"):
        detect_format(tmp_path / "other.pt")


@pytest.mark.parametrize("kind", ["auto", "stylenat", "styleswin", "rosinality", "stylegan2-ada", "ganformer"])
def test_an_image_or_text_file_is_not_a_checkpoint(tmp_path, capsys, kind):
    """`import some.png` says "not a checkpoint", as `sample --ckpt some.png` does, for every --from."""
    from PIL import Image

    png = tmp_path / "some.png"
    Image.new("RGB", (4, 4)).save(png)
    text = tmp_path / "notes.txt"
    text.write_text("NG\r\nnot a network\n")
    for path in (png, text):
        assert _cli(["import", str(path), "--from", kind, "--out", str(tmp_path / "out.pt")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: not a checkpoint") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.pt").exists()
