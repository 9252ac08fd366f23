"""Readers: `open_dataset` over every layout, and the torch `TrainingDataset` the trainer uses."""

from __future__ import annotations

import io
import os
import pickle

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from natgan.data import TrainingDataset, check_dataset, open_dataset, prepare_dataset
from natgan.errors import ConfigError, DataError
from natgan.models.normalization import from_unit
from test_prepare import N, expected_square, photo_bytes, write_folder, write_lsun, write_zip


@pytest.fixture(scope="module")
def files():
    return photo_bytes()


@pytest.fixture(scope="module")
def data(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("data")
    folder = write_folder(root / "folder", files)
    lmdb_path = root / "photos.lmdb"
    prepare_dataset(folder, lmdb_path, sizes="16,32", encoding="png", workers=0, progress=False)
    return {"root": root, "folder": folder, "zip": write_zip(root / "photos.zip", files),
            "lsun": write_lsun(root / "lsun_lmdb", files)[0], "lmdb": lmdb_path}


def official_lmdb(path, images: list[np.ndarray], size: int):
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=100)
            txn.put(f"{size}-{i:05d}".encode(), buf.getvalue())
        txn.put(b"length", str(len(images)).encode())
    env.close()
    return path


# ---------------------------------------------------------------- open_dataset

def test_open_our_lmdb(data, files):
    src = open_dataset(data["lmdb"], 32)
    assert len(src) == N and src.resolution == 32
    img = src[2]
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    assert np.array_equal(img, expected_square(files[sorted(files)[2]], 32))
    assert np.array_equal(src[-1], src[N - 1])
    with pytest.raises(IndexError):
        src[N]
    meta = src.metadata
    assert src.content_hash == meta["size_hashes"]["32"] and "nat-gan LMDB" in src.description
    assert open_dataset(data["lmdb"]).resolution == 32  # default: the largest stored size
    assert open_dataset(data["lmdb"], 16).content_hash != src.content_hash
    src.close()


def test_missing_resolution_lists_available(data):
    with pytest.raises(DataError, match=r"no 64x64 images; available sizes: 16, 32"):
        open_dataset(data["lmdb"], 64)


def test_official_lmdb_without_metadata(tmp_path, files):
    images = [expected_square(files[name], 32) for name in sorted(files)]
    path = official_lmdb(tmp_path / "official.lmdb", images, 32)
    src = open_dataset(path)
    assert src.resolution == 32 and len(src) == N and src.metadata is None
    assert src.content_hash.startswith("sampled-sha256:") and "official" in src.description
    assert np.abs(src[1].astype(int) - images[1].astype(int)).mean() < 3  # JPEG q100
    assert open_dataset(path).content_hash == src.content_hash


@pytest.mark.parametrize("layout", ["folder", "zip", "lsun"])
def test_open_image_collections_resize_like_prepare(data, files, layout):
    src = open_dataset(data[layout], 24)
    assert len(src) == N and src.resolution == 24
    assert src.content_hash.startswith(f"{'lsun-lmdb' if layout == 'lsun' else layout}-sha256:")
    for i in range(N):
        assert src[i].shape == (24, 24, 3)
    if layout != "lsun":  # LSUN order is by key and its values were re-encoded as webp
        assert np.array_equal(src[4], expected_square(files[sorted(files)[4]], 24))
    assert open_dataset(data[layout], 24).content_hash == src.content_hash
    assert open_dataset(data[layout], 32).content_hash != src.content_hash


def test_folder_without_resolution_uses_first_image(data, files):
    src = open_dataset(data["folder"])
    first = Image.open(io.BytesIO(files[sorted(files)[0]]))
    assert src.resolution == min(first.size)
    assert all(src[i].shape == (src.resolution, src.resolution, 3) for i in (0, 5))


def test_folder_hash_follows_file_changes(tmp_path, files):
    folder = write_folder(tmp_path / "f", files)
    before = open_dataset(folder, 16).content_hash
    target = folder / "0005.png"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert open_dataset(folder, 16).content_hash != before


def test_errors(tmp_path, data):
    with pytest.raises(DataError, match="no such"):
        open_dataset(tmp_path / "missing.lmdb")
    env = lmdb.open(str(tmp_path / "half.lmdb"))
    with env.begin(write=True) as txn:
        txn.put(b"32-00000", b"x")
    env.close()
    with pytest.raises(DataError, match="incomplete"):
        open_dataset(tmp_path / "half.lmdb")
    lmdb.open(str(tmp_path / "empty.lmdb")).close()
    with pytest.raises(DataError, match="incomplete"):
        open_dataset(tmp_path / "empty.lmdb")
    (tmp_path / "x.lmdb.partial-123").mkdir()
    with pytest.raises(DataError, match="partial build"):
        open_dataset(tmp_path / "x.lmdb.partial-123")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="a.png"):
        open_dataset(bad, 16)[0]


def test_same_lmdb_opened_many_times_in_one_process(data):
    a, b = open_dataset(data["lmdb"], 32), open_dataset(data["lmdb"], 16)
    report = check_dataset(data["lmdb"], workers=0, progress=False)
    assert report["ok"]
    a.close()
    assert b[0].shape == (16, 16, 3)  # still readable after another user closed
    b.close()


def test_rebuilt_dataset_is_not_served_from_a_stale_handle(tmp_path, data):
    out = tmp_path / "r.lmdb"
    prepare_dataset(data["folder"], out, sizes=16, max_images=2, workers=0, progress=False)
    held = open_dataset(out)
    prepare_dataset(data["folder"], out, sizes=16, max_images=5, workers=0, progress=False, force=True)
    assert len(open_dataset(out)) == 5
    held.close()


# ---------------------------------------------------------------- TrainingDataset

@pytest.mark.parametrize("norm", ["imagenet", "symmetric"])
def test_training_dataset_normalisation(data, norm):
    ds = TrainingDataset(data["lmdb"], 32, normalization=norm)
    src = open_dataset(data["lmdb"], 32)
    x = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    ref = from_unit(torch.from_numpy(src[3]).permute(2, 0, 1)[None].float() / 255, norm)[0]
    assert torch.allclose(x, ref, atol=1e-5)
    assert len(ds) == N and ds.resolution == 32 and ds.content_hash == src.content_hash


def test_training_flip_mirrors_about_half_of_a_batch(data):
    """Dataset flips happen in the trainer (``bcr.flip`` on its own generator, so resume is exact)."""
    from natgan.augment import bcr

    plain = torch.stack([TrainingDataset(data["lmdb"], 32)[0]] * 40)
    out = bcr.flip(plain, torch.Generator().manual_seed(0))
    flipped = [torch.equal(x, plain[0].flip(-1)) for x in out]
    assert all(f or torch.equal(x, plain[0]) for f, x in zip(flipped, out))
    assert 5 < sum(flipped) < 35
    again = bcr.flip(plain, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_training_dataset_rejects_bad_input(tmp_path, data):
    with pytest.raises(ConfigError, match="normalization"):
        TrainingDataset(data["lmdb"], 32, normalization="zero-one")
    with pytest.raises(DataError, match="available sizes: 16, 32"):
        TrainingDataset(data["lmdb"], 256)
    with pytest.raises(DataError):
        TrainingDataset(tmp_path / "nothing", 32)


def test_training_dataset_in_dataloader_workers(data):
    """Forked workers open their own LMDB handles; batches equal the single-process result."""
    ds = TrainingDataset(data["lmdb"], 32, normalization="symmetric")
    ref = torch.stack([ds[i] for i in range(N)])
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False, persistent_workers=False)
    got = torch.cat(list(loader))
    assert torch.equal(got, ref)


def test_training_dataset_pickles_for_spawned_workers(data):
    ds = TrainingDataset(data["zip"], 16)
    _ = ds[0]  # opens a handle in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1], ds[1])
    lmdb_ds = TrainingDataset(data["lmdb"], 16)
    _ = lmdb_ds[0]
    assert torch.equal(pickle.loads(pickle.dumps(lmdb_ds))[2], lmdb_ds[2])
