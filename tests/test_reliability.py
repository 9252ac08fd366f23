"""Issue 18: nothing a careless or hostile user does loses or silently corrupts a run, a dataset or a result.

One test (at least) per defect of the adversarial pass; each fails on the code before the fix.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from natgan.data import imaging, prepare_dataset
from natgan.errors import ConfigError


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grey ``[H, W]`` or RGB ``[H, W, 3]`` uint16), written by hand: Pillow cannot write one."""
    h, w = arr.shape[:2]
    color = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png8(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"{i:03d}.png").write_bytes(png8(i))
    return root


def tree_bytes(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ item 3: output is the source
def test_prepare_refuses_an_output_that_is_the_source_through_dotdot_or_symlink(tmp_path):
    built = tmp_path / "src.lmdb"
    prepare_dataset(image_folder(tmp_path / "imgs"), built, sizes=16, encoding="png", workers=0, progress=False)
    before = tree_bytes(built)
    (tmp_path / "sub").mkdir()
    (tmp_path / "alias.lmdb").symlink_to(built)
    for out in (tmp_path / "sub" / ".." / "src.lmdb", tmp_path / "alias.lmdb"):
        with pytest.raises(ConfigError, match="is the source itself"):
            prepare_dataset(built, out, sizes=8, encoding="png", workers=0, force=True, progress=False)
    assert tree_bytes(built) == before


# ------------------------------------------------------------------ item 5: 16-bit PNGs
RAMP = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)


@pytest.mark.parametrize("layout", ["grey", "rgb"])
def test_sixteen_bit_pngs_are_scaled_not_clipped(layout):
    arr = RAMP if layout == "grey" else np.stack([RAMP, RAMP // 2, 65535 - RAMP], axis=-1)
    data = png16(arr)
    want = (arr >> 8).astype(np.uint8)
    if layout == "grey":
        want = np.repeat(want[:, :, None], 3, axis=2)
    assert np.array_equal(np.asarray(imaging.decode_rgb(data)), want)
    assert np.array_equal(imaging.decode_array(data), want)
    assert abs(np.asarray(imaging.decode_rgb(data))[..., 0].mean() - 127.5) < 1


def test_prepare_of_a_sixteen_bit_folder_keeps_the_ramp(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    (src / "grey.png").write_bytes(png16(RAMP))
    out = tmp_path / "o.lmdb"
    prepare_dataset(src, out, sizes=32, encoding="png", workers=0, progress=False)
    from natgan.data import open_dataset

    img = open_dataset(out, 32)[0]
    assert abs(img.mean() - 127.5) < 1 and img.min() == 0 and img.max() == 255


# ------------------------------------------------------------------ checkpoints: integrity + structure
import os  # noqa: E402
import zipfile  # noqa: E402

import torch  # noqa: E402

import tiny_model  # noqa: E402,F401
from natgan import checkpoint, recipe as recipes  # noqa: E402
from natgan.errors import CheckpointError  # noqa: E402
from natgan.models import create  # noqa: E402


def tiny_checkpoint(step: int = 7) -> dict:
    r = recipes.from_dict({"model": {"name": "_tiny_test"}, "train": {"batch": 4}})
    pair = create("_tiny_test")
    opt = torch.optim.Adam(pair.generator.parameters(), lr=1e-3)
    pair.generator(torch.randn(2, 8)).sum().backward()
    opt.step()
    return checkpoint.make_checkpoint(
        model_name="_tiny_test", model_config={"resolution": 8, "z_dim": 8, "width": 16}, recipe=r.to_dict(),
        normalization="symmetric", G=pair.generator.state_dict(), G_ema=pair.generator.state_dict(),
        D=pair.discriminator.state_dict(), optim={"G": opt.state_dict()}, step=step, images_seen=4 * step)


def flip_byte_in_entry(path: Path, entry_suffix: str) -> str:
    """Flip one byte inside the data of the first zip entry whose name ends with ``entry_suffix``."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(entry_suffix))
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
        pos = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        fh.seek(pos)
        byte = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([byte[0] ^ 0x10]))
    return info.filename


def test_a_flipped_byte_inside_a_tensor_is_refused_naming_the_entry(tmp_path):
    path = checkpoint.save(tiny_checkpoint(), tmp_path / "c.pt")
    entry = flip_byte_in_entry(path, "/data/0")
    with pytest.raises(CheckpointError, match=f"entry '{entry}' fails its CRC check"):
        checkpoint.load(path)


def _mutations():
    def set_key(dotted, value):
        def mutate(ck):
            *parents, last = dotted.split(".")
            node = ck
            for p in parents:
                node = node[p]
            node[last] = value
        return mutate

    def drop_weight(ck):
        ck["weights"]["G"].pop(next(iter(ck["weights"]["G"])))

    def extra_weight(ck):
        ck["weights"]["G"]["bogus.weight"] = torch.zeros(2)

    def wrong_shape(ck):
        name = next(iter(ck["weights"]["G_ema"]))
        ck["weights"]["G_ema"][name] = torch.zeros(3, 3, 3)

    def wrong_adam_moment(ck):
        state = ck["optim"]["G"]["state"]
        state[next(iter(state))]["exp_avg"] = torch.zeros(1)

    return {
        "model not a table": (set_key("model", [1]), "key 'model'"),
        "config not a table": (set_key("model.config", "x"), "key 'model.config'"),
        "recipe a list": (set_key("recipe", [1]), "key 'recipe'"),
        "progress a string": (set_key("progress", "x"), "key 'progress'"),
        "negative step": (set_key("progress.step", -1), "key 'progress.step'"),
        "absurd step": (set_key("progress.step", 10 ** 15), "key 'progress.step'"),
        "float step": (set_key("progress.step", 1.5), "key 'progress.step'"),
        "rng a list": (set_key("rng", [1]), "key 'rng'"),
        "rng ranks garbage": (set_key("rng", {"ranks": [{"torch": 1}]}), "key 'rng.ranks"),
        "extra a list": (set_key("extra", [1]), "key 'extra'"),
        "pl_mean a string": (set_key("extra", {"pl_mean": "x"}), "key 'extra.pl_mean'"),
        "optim a list": (set_key("optim", [1]), "key 'optim'"),
        "optim.G garbage": (set_key("optim", {"G": {"state": 1}}), "key 'optim.G'"),
        "adam moment shape": (wrong_adam_moment, "key 'optim.G.state"),
        "metrics a dict": (set_key("metrics", {"a": 1}), "key 'metrics'"),
        "metrics entries not tables": (set_key("metrics", [1]), "key 'metrics[0]'"),
        "weights.G a list": (set_key("weights.G", [1, 2]), "key 'weights.G'"),
        "weights.G values not tensors": (set_key("weights.G", {"map.weight": 3}), "key 'weights.G'"),
        "unknown weight set": (set_key("weights.X", {}), "key 'weights.X'"),
        "missing tensor": (drop_weight, "missing tensor"),
        "extra tensor": (extra_weight, "unexpected tensor 'bogus.weight'"),
        "wrong shape": (wrong_shape, "does not match the model's"),
        "unknown model": (set_key("model.name", "nope"), "key 'model'"),
        "bad config value": (set_key("model.config", {"resolution": "x"}), "key 'model'"),
        "absurd config": (set_key("model.config", {"resolution": 64, "z_dim": 2 ** 22, "width": 2 ** 22}),
                          "refusing to allocate"),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_malformed_checkpoints_are_one_line_errors_from_load(tmp_path, name):
    mutate, expected = MUTATIONS[name]
    ck = tiny_checkpoint()
    mutate(ck)
    path = tmp_path / "bad.pt"
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match=re.escape(expected)) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_random_bytes_and_fifos_are_named_as_such(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(1).integers(0, 128, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="neither a torch zip archive nor a pickle"):
        checkpoint.load(junk)
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        checkpoint.load(fifo)


def test_non_finite_generator_weights_are_refused(tmp_path):
    ck = tiny_checkpoint()
    name = next(iter(ck["weights"]["G_ema"]))
    ck["weights"]["G_ema"][name] = torch.full_like(ck["weights"]["G_ema"][name], float("nan"))
    path = checkpoint.save(ck, tmp_path / "nan.pt")
    loaded = checkpoint.load(path)
    with pytest.raises(CheckpointError, match=rf"nan.pt: key 'weights.G_ema.{re.escape(name)}': non-finite"):
        checkpoint.build_generator(loaded, source=path)
    checkpoint.build_generator(loaded, ema=False, source=path)  # G itself is fine


# ------------------------------------------------------------------ item 6: NaN / inf in recipes
MINIMAL = {"model": {"name": "_tiny_test"}, "train": {"batch": 4}}


@pytest.mark.parametrize("key", ["train.ema_beta", "train.d_lr", "train.g_lr", "train.beta1", "train.r1",
                                 "train.style_mixing"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused_everywhere(key, value):
    with pytest.raises(ConfigError, match=rf"--set {key}={value}: key '{key}': expected a finite number"):
        recipes.apply_overrides(MINIMAL, [f"{key}={value}"], base_source="r.toml")


def test_non_finite_floats_in_a_recipe_file_and_model_config(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[model]\nname = "_tiny_test"\n[train]\nd_lr = nan\n')
    with pytest.raises(ConfigError, match=r"r.toml: key 'train.d_lr': expected a finite number, got nan"):
        recipes.load(path)
    with pytest.raises(ConfigError, match=r"key 'model.lr_mlp': expected a finite number"):
        recipes.from_dict({"model": {"name": "stylenat", "lr_mlp": float("inf")}})


# ------------------------------------------------------------------ --set is order-independent
def test_set_overrides_are_validated_after_all_are_applied():
    a = recipes.apply_overrides(MINIMAL, ["train.iterations=1000", "train.lr_decay_start=500"], base_source="r")
    b = recipes.apply_overrides(MINIMAL, ["train.lr_decay_start=500", "train.iterations=1000"], base_source="r")
    assert a.to_dict() == b.to_dict() and a.train.iterations == 1000 and a.train.lr_decay_start == 500
    base = {"model": {"name": "stylenat"}}
    kernels = "model.kernels=[[7], [7], [7], [7], [7]]"
    c = recipes.apply_overrides(base, ["model.resolution=64", kernels], base_source="r")
    d = recipes.apply_overrides(base, [kernels, "model.resolution=64"], base_source="r")
    assert c.to_dict() == d.to_dict() and c.model.resolution == 64
    with pytest.raises(ConfigError, match=r"^--set train.lr_decay_start=5000: key 'train.lr_decay_start'"):
        recipes.apply_overrides(MINIMAL, ["train.lr_decay_start=5000", "train.iterations=1000"], base_source="r")


# ------------------------------------------------------------------ item 8: Fréchet distance without sqrtm
@pytest.mark.parametrize("n", [300, 40])
def test_frechet_distance_needs_no_sqrtm_and_equals_clean_fid(monkeypatch, n):
    import scipy.linalg
    from cleanfid import fid as cleanfid_fid

    from natgan.metrics.stats import frechet_distance, statistics

    rng = np.random.default_rng(n)
    mix = rng.normal(size=(64, 64))
    a = statistics((rng.normal(size=(n, 64)) @ mix).astype(np.float32))
    b = statistics((rng.normal(size=(n, 64)) @ mix + 0.3).astype(np.float32))
    theirs = cleanfid_fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)

    def removed(*args, **kwargs):
        raise TypeError("sqrtm() got an unexpected keyword argument 'disp'")  # SciPy >= 1.18

    monkeypatch.setattr(scipy.linalg, "sqrtm", removed)
    ours = frechet_distance(a, b)
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6 * ours)
