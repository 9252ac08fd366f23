"""natgan.metrics and `nat-gan fid`: distances, clean-fid parity, caching, offline behaviour, CLI.

Everything runs offline with a tiny fixed random feature network; real Inception weights are never
needed (their loading is exercised with stand-in files of the right format).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from cleanfid import fid as cleanfid_fid
from PIL import Image
from scipy import linalg
from torch import nn

from natgan import checkpoint as ckpt_io
from natgan.errors import CheckpointError, ConfigError, NatGanError
from natgan.metrics import (FeatureExtractor, StatsCache, Statistics, build_inception, cache_dir, fid_for_datasets,
                            fid_for_generator, frechet_distance, kernel_inception_distance, record_in_checkpoint,
                            statistics)
from natgan.metrics import weights as weights_mod
from natgan.sampling import ImageGenerator
from test_sample import TINY, TinyGen, TinyGenConfig, run_cli, tiny_checkpoint

MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")


class TinyFeatures(nn.Module):
    """Fixed random conv net: float images in [0, 255], any size -> 8 features."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(1234)
        self.conv = nn.Conv2d(3, 6, 5, stride=3)
        self.head = nn.Linear(24, 8)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)

    def forward(self, x):
        x = torch.relu(self.conv(x / 64 - 2))
        return self.head(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))


class CountingExtractor(FeatureExtractor):
    """Counts the images it embeds, to see whether the reference was recomputed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        return super().__call__(images)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NATGAN_CACHE_MAX_MB", raising=False)
    # these tests use folders of a few images; the size threshold of the cache has its own test below
    monkeypatch.setattr("natgan.metrics.cache.MIN_CACHED_IMAGES", 1)
    monkeypatch.delenv("NATGAN_INCEPTION", raising=False)
    monkeypatch.delenv("NATGAN_OFFLINE", raising=False)
    # never look at (or download to) the machine's real clean-fid locations
    monkeypatch.setattr(weights_mod.WeightsFile, "tool_location", lambda self: tmp_path / "absent" / self.filename)

    def no_network(url, target, **_):
        raise urllib.error.URLError("network unreachable (simulated)")

    monkeypatch.setattr(weights_mod, "download", no_network)


@pytest.fixture
def net():
    return TinyFeatures().eval()


@pytest.fixture
def G():
    torch.manual_seed(5)
    return TinyGen(TinyGenConfig(resolution=8)).eval()


def make_folder(path: Path, n: int, *, seed: int, size: int = 8) -> Path:
    """Smooth-ish random RGB PNGs (a stand-in for a real dataset)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, size=(1, 1, 3))
        noise = rng.integers(-60, 60, size=(size, size, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path / f"{i:04d}.png")
    return path


# ---------------------------------------------------------------------------------- distances


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.zeros(5), np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0, 9.0]), np.array([2.0, 1.0, 1.0, 2.0, 0.5])
    a = Statistics(mu1, np.diag(var1), 1000)
    b = Statistics(mu2, np.diag(var2), 1000)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_direct_scipy_on_general_gaussians():
    rng = np.random.default_rng(0)
    d = 12
    A, B = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = A @ A.T + 0.1 * np.eye(d), B @ B.T + 0.1 * np.eye(d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    root1 = linalg.sqrtm(s1).real
    direct = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(root1 @ s2 @ root1).real)
    assert frechet_distance(Statistics(m1, s1, 10), Statistics(m2, s2, 10)) == pytest.approx(direct, rel=1e-7)
    # sampled features: statistics() is numpy's mean / unbiased covariance
    x = rng.multivariate_normal(m1, s1, size=4000).astype(np.float32)
    st = statistics(x)
    np.testing.assert_allclose(st.mu, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(st.sigma, np.cov(x, rowvar=False), rtol=1e-12)
    assert frechet_distance(st, Statistics(m1, s1, 10)) < 0.05 * np.trace(s1)


def test_identical_sets_give_zero_and_dimension_mismatch_is_an_error():
    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    assert abs(frechet_distance(statistics(x), statistics(x.copy()))) < 1e-6
    with pytest.raises(NatGanError, match="feature dimensions differ"):
        frechet_distance(statistics(x), statistics(x[:, :8]))
    with pytest.raises(NatGanError, match="at least 2"):
        statistics(x[:1])


def test_kid_is_clean_fid_kid_with_seeded_subsets():
    rng = np.random.default_rng(2)
    ref, gen = rng.normal(size=(120, 8)), rng.normal(0.3, 1.0, size=(90, 8))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ours = kernel_inception_distance(ref, gen, seed=7, num_subsets=20, max_subset_size=50)
    assert np.array_equal(np.random.get_state()[1], before)  # global numpy RNG untouched
    np.random.seed(7)
    theirs = cleanfid_fid.kernel_distance(ref, gen, num_subsets=20, max_subset_size=50)
    assert ours == theirs
    assert ours == kernel_inception_distance(ref, gen, seed=7, num_subsets=20, max_subset_size=50)
    assert ours > 0


# ----------------------------------------------------------------------- parity with clean-fid


@pytest.mark.parametrize("mode", MODES)
def test_folder_vs_folder_equals_clean_fid(tmp_path, net, mode):
    a = make_folder(tmp_path / "a", 12, seed=1)
    b = make_folder(tmp_path / "b", 14, seed=2)
    theirs = cleanfid_fid.compute_fid(str(a), str(b), mode=mode, custom_feat_extractor=net, num_workers=0,
                                      batch_size=8, device=torch.device("cpu"), verbose=False)
    ours = fid_for_datasets(a, str(b), mode=mode, extractor=FeatureExtractor(net, mode=mode), batch_size=5,
                            device="cpu", progress=False, workers=0)
    assert ours["fid"] == pytest.approx(theirs, rel=1e-6)
    assert ours["num_gen"] == 12 and ours["num_ref"] == 14


@pytest.mark.parametrize("mode", MODES)
def test_generator_vs_folder_equals_clean_fid_on_the_same_images(tmp_path, net, G, mode):
    ref = make_folder(tmp_path / "ref", 14, seed=3)
    num, clean_batch = 13, 8
    padded = -(-num // clean_batch) * clean_batch
    images = ImageGenerator(G).images(range(padded))  # seed i -> image i, as fid_for_generator draws them
    served = iter(images.split(clean_batch))

    def gen(z):  # clean-fid draws its own z; serve our seeds' images instead, in order
        batch = next(served)
        return batch.float() if mode == "legacy_tensorflow" else batch

    theirs = cleanfid_fid.compute_fid(gen=gen, fdir2=str(ref), mode=mode, custom_feat_extractor=net, num_gen=num,
                                      z_dim=G.z_dim, batch_size=clean_batch, num_workers=0,
                                      device=torch.device("cpu"), verbose=False)
    ours = fid_for_generator(G, str(ref), num=num, mode=mode, extractor=FeatureExtractor(net, mode=mode),
                             batch_size=4, device="cpu", progress=False, workers=0)
    assert ours["fid"] == pytest.approx(theirs, rel=1e-6)


def test_result_states_protocol_counts_and_reference_identity(tmp_path, net, G):
    from natgan.data import open_dataset

    ref = make_folder(tmp_path / "ref", 30, seed=4)
    r = fid_for_generator(G, str(ref), num=20, extractor=FeatureExtractor(net, mode="clean", name="tiny"),
                          batch_size=6, progress=False, workers=0, num_ref=12, kid=True)
    src = open_dataset(ref, resolution=8)
    assert r["mode"] == "clean" and r["num_gen"] == 20 and r["num_ref"] == 12
    assert r["generated"]["seeds"] == "0-19" and r["generated"]["trunc"] == 1.0
    ident = r["reference"]
    assert ident["content_hash"] == src.content_hash and ident["resolution"] == 8
    assert ident["length"] == 30 and ident["count"] == 12 and ident["subset"] == "random-0"
    assert r["fid"] > 0 and isinstance(r["kid"], float)
    assert set(r["timings"]) >= {"reference_s", "generate_and_embed_s", "total_s", "images_per_s"}
    assert "tiny" in r["protocol"]
    json.dumps(r)  # plain data: fits --json and the checkpoint's weights_only metrics list


def test_overlap_does_not_change_the_features_and_errors_propagate(tmp_path, net, G):
    ref = make_folder(tmp_path / "ref", 16, seed=5)
    ext = FeatureExtractor(net, mode="legacy_pytorch")
    kw = dict(num=13, extractor=ext, batch_size=4, progress=False, workers=0)
    assert fid_for_generator(G, str(ref), overlap=True, **kw)["fid"] == fid_for_generator(
        G, str(ref), overlap=False, **kw)["fid"]

    calls = {"n": 0}
    original = G.synthesis

    def failing(w):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("generator exploded")
        return original(w)

    G.synthesis = failing
    with pytest.raises(RuntimeError, match="generator exploded"):
        fid_for_generator(G, str(ref), **kw)


def test_generator_modes_are_restored(tmp_path, net):
    from natgan.models import create

    G = create("stylegan2", resolution=8, style_dim=16, n_mlp=2, channel_max=16, channel_multiplier=1).generator
    G.train()
    with torch.no_grad():  # noise strengths start at zero; make the noise visible
        for name, p in G.named_parameters():
            if "noise" in name:
                p.fill_(0.5)
    ref = make_folder(tmp_path / "ref", 12, seed=6)
    kw = dict(num=10, extractor=FeatureExtractor(net, mode="legacy_pytorch"), batch_size=4, progress=False, workers=0)
    torch.manual_seed(99)
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    first = fid_for_generator(G, str(ref), noise_mode="random", **kw)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    assert G.training and G.noise_mode == "random"
    assert fid_for_generator(G, str(ref), noise_mode="random", **kw)["fid"] == first["fid"]  # random, but seeded
    assert first["generated"]["noise_mode"] == "random"
    assert fid_for_generator(G, str(ref), **kw)["fid"] == first["fid"]  # random is the metrics' default
    assert "published protocol" in first["generated"]["noise"]
    const = fid_for_generator(G, str(ref), noise_mode="const", **kw)  # `sample`'s default, on request
    assert const["generated"]["noise_mode"] == "const" and "not the published" in const["generated"]["noise"]
    assert const["fid"] != first["fid"] and G.noise_mode == "random"


@pytest.mark.parametrize("noise_mode", ["random", "const"])
def test_generator_fid_equals_scoring_the_pngs_sample_writes(tmp_path, net, noise_mode):
    """The metrics' random noise is drawn from the seeds: `sample --noise-mode random` with the same seeds and
    batch writes exactly the images `fid --ckpt` scored (and likewise for const)."""
    from natgan.models import create
    from natgan.sampling import write_samples

    G = create("stylegan2", resolution=8, style_dim=16, n_mlp=2, channel_max=16, channel_multiplier=1).generator
    with torch.no_grad():
        for name, p in G.named_parameters():
            if "noise" in name:
                p.fill_(0.5)
    ref = make_folder(tmp_path / "ref", 12, seed=6)
    kw = dict(extractor=FeatureExtractor(net, mode="legacy_pytorch"), progress=False, workers=0, use_cache=False,
              batch_size=4)
    direct = fid_for_generator(G, str(ref), num=10, seed=5, noise_mode=noise_mode, **kw)
    write_samples(G, range(5, 15), tmp_path / "pngs", batch_size=4, noise_mode=noise_mode)
    written = fid_for_datasets(tmp_path / "pngs", str(ref), **kw)
    assert direct["fid"] == pytest.approx(written["fid"], rel=1e-9, abs=1e-9)
    assert direct["generated"]["noise_mode"] == noise_mode


# ------------------------------------------------------------------------------------- caching


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("NATGAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "nat-gan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "nat-gan"
    assert "site-packages" not in str(StatsCache().root)


def test_reference_cache_hit_then_invalidated_by_a_changed_dataset(tmp_path, net, G):
    ref = make_folder(tmp_path / "ref", 20, seed=7)
    ext = CountingExtractor(net, mode="legacy_pytorch", name="tiny-v1")
    kw = dict(num=10, extractor=ext, batch_size=5, progress=False, workers=0)

    first = fid_for_generator(G, str(ref), **kw)
    assert not first["reference_cached"] and ext.images == 30
    stats_file = Path(first["reference"]["stats_file"])
    assert stats_file.is_file() and stats_file.is_relative_to(tmp_path / "cache")

    ext.images = 0
    second = fid_for_generator(G, str(ref), **kw)
    assert second["reference_cached"] and ext.images == 10  # only the generated side was embedded
    assert second["fid"] == first["fid"]

    img = ref / "0003.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(img)
    stat = img.stat()
    os.utime(img, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    ext.images = 0
    third = fid_for_generator(G, str(ref), **kw)
    assert not third["reference_cached"] and ext.images == 30
    assert third["reference"]["content_hash"] != first["reference"]["content_hash"]
    assert third["fid"] != first["fid"]

    ext.images = 0
    fid_for_generator(G, str(ref), num_ref=15, **kw)  # another count is another entry
    assert ext.images == 25


def test_unnamed_extractors_and_no_cache_store_nothing(tmp_path, net, G):
    ref = make_folder(tmp_path / "ref", 10, seed=8)
    fid_for_generator(G, str(ref), num=6, extractor=FeatureExtractor(net, mode="clean"), progress=False, workers=0)
    fid_for_generator(G, str(ref), num=6, extractor=FeatureExtractor(net, mode="clean", name="x"), progress=False,
                      workers=0, use_cache=False)
    assert not (tmp_path / "cache").exists()


def test_corrupt_cache_entry_is_recomputed(tmp_path, net, G):
    ref = make_folder(tmp_path / "ref", 10, seed=9)
    ext = CountingExtractor(net, mode="clean", name="tiny")
    kw = dict(num=6, extractor=ext, progress=False, workers=0)
    first = fid_for_generator(G, str(ref), **kw)
    Path(first["reference"]["stats_file"]).write_bytes(b"garbage")
    ext.images = 0
    again = fid_for_generator(G, str(ref), **kw)
    assert not again["reference_cached"] and ext.images == 16 and again["fid"] == first["fid"]


# ---------------------------------------------------------------------- offline Inception weights


@pytest.mark.parametrize("mode, filename, url_part", [
    ("clean", "inception-2015-12-05.pt", "nvlabs-fi-cdn.nvidia.com"),
    ("legacy_tensorflow", "inception-2015-12-05.pt", "nvlabs-fi-cdn.nvidia.com"),
    ("legacy_pytorch", "pt_inception-2015-12-05-6726825d.pth", "github.com/mseitzer/pytorch-fid"),
])
def test_no_weights_and_no_network_names_the_file_url_and_place(tmp_path, mode, filename, url_part):
    with pytest.raises(NatGanError) as info:
        build_inception(mode)
    msg = str(info.value)
    assert "\n" not in msg and filename in msg and url_part in msg and "--inception" in msg
    assert str(tmp_path / "cache" / "weights" / filename) in msg and "network unreachable" in msg


def test_offline_switch_skips_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("NATGAN_OFFLINE", "1")
    monkeypatch.setattr(weights_mod, "download", lambda *a, **k: pytest.fail("downloaded while offline"))
    with pytest.raises(NatGanError, match="NATGAN_OFFLINE"):
        build_inception("clean")


def test_explicit_weights_path_errors(tmp_path, monkeypatch):
    (tmp_path / "w").mkdir()
    with pytest.raises(NatGanError, match="has no inception-2015-12-05.pt"):
        build_inception("clean", inception=tmp_path / "w")
    monkeypatch.setenv("NATGAN_INCEPTION", str(tmp_path / "missing.pt"))
    with pytest.raises(NatGanError, match="NATGAN_INCEPTION .*missing.pt: file not found"):
        build_inception("legacy_pytorch")


class FakeTorchScriptInception(nn.Module):
    """Same interface as NVIDIA's TorchScript Inception (``layers`` + ``return_features``), tiny inside."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(3, 2048, 4))

    def forward(self, x, return_features: bool = False):
        x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


def write_fake_torchscript(directory: Path) -> Path:
    import warnings

    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(FakeTorchScriptInception()).save(str(directory / "inception-2015-12-05.pt"))
    return directory / "inception-2015-12-05.pt"


def test_torchscript_weights_found_through_env_directory(tmp_path, monkeypatch):
    fake = write_fake_torchscript(tmp_path / "weights")
    monkeypatch.setenv("NATGAN_INCEPTION", str(tmp_path / "weights"))
    with pytest.raises(NatGanError, match="refused before loading: sha256 [0-9a-f]{64} is not the official"):
        build_inception("clean")  # not the official digest: never loaded unless the user names it
    monkeypatch.setenv("NATGAN_TRUST_TORCHSCRIPT", str(fake))
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    for mode in ("clean", "legacy_tensorflow"):
        ext = build_inception(mode)
        assert ext.name == "tf-inception-2015-12-05" and ext.network.resize_inside == (mode == "legacy_tensorflow")
        assert ext.protocol.startswith(f"clean-fid '{mode}'")
        assert f"weights sha256 {hashlib.sha256(fake.read_bytes()).hexdigest()} (NOT the official" in ext.protocol
        feats = ext(images)
        assert feats.shape == (3, 2048) and feats.dtype == np.float32
    ckpt_file = tmp_path / "not_inception.pt"
    torch.save({"a": torch.zeros(1)}, ckpt_file)
    with pytest.raises(NatGanError, match="refused before loading"):
        build_inception("clean", inception=ckpt_file)
    with pytest.raises(NatGanError, match="not the TorchScript Inception"):
        build_inception("clean", inception=ckpt_file, trust_torchscript=ckpt_file)


def test_pytorch_fid_weights_load_from_a_local_file(tmp_path, monkeypatch):
    """A random-init state dict with the exact pytorch-fid keys stands in for the real 91 MB file."""
    from cleanfid import inception_pytorch

    captured = {}
    monkeypatch.setattr(inception_pytorch, "load_state_dict_from_url", lambda *a, **k: {})
    monkeypatch.setattr(nn.Module, "load_state_dict", lambda self, sd, *a, **k: captured.setdefault("m", self))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inception_pytorch.fid_inception_v3()
    monkeypatch.undo()
    _isolate_again(tmp_path, monkeypatch)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(captured["m"].state_dict(), path)
    with pytest.raises(NatGanError, match="refused: sha256 [0-9a-f]{64} is not the official"):
        build_inception("legacy_pytorch", inception=path)

    bad = tmp_path / "bad.pth"
    monkeypatch.setenv("NATGAN_UNOFFICIAL_WEIGHTS", os.pathsep.join([str(path), str(bad)]))
    ext = build_inception("legacy_pytorch", inception=path)
    assert ext.name == "pytorch-fid-inception-2015-12-05"
    feats = ext(torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    # the 1008-class layer that pytorch-fid drops is kept for the Inception Score's unbiased logits
    np.testing.assert_array_equal(ext.logits_weight, captured["m"].state_dict()["fc.weight"].numpy())
    assert inception_pytorch.load_state_dict_from_url.__module__ != "natgan.metrics.extractors"  # restored

    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(NatGanError, match="not the pytorch-fid Inception weights"):
        build_inception("legacy_pytorch", inception=bad)


def _isolate_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(weights_mod, "download", lambda *a, **k: pytest.fail("tried to download"))


# --------------------------------------------------------------------- published statistics


def test_published_statistics_by_name(tmp_path, net, G):
    ext = FeatureExtractor(net, mode="clean", name="tiny")
    ref = make_folder(tmp_path / "ref", 20, seed=10)
    direct = fid_for_generator(G, str(ref), num=8, extractor=ext, progress=False, workers=0)
    stats_dir = tmp_path / "cache" / "cleanfid-stats"
    stats_dir.mkdir(parents=True)
    with np.load(direct["reference"]["stats_file"]) as cached:
        np.savez(stats_dir / "ffhq_clean_trainval70k_256.npz", mu=cached["mu"], sigma=cached["sigma"])

    r = fid_for_generator(G, "cleanfid:ffhq:256:trainval70k", num=8, extractor=ext, progress=False)
    assert r["fid"] == pytest.approx(direct["fid"], rel=1e-12)
    ident = r["reference"]
    assert ident["kind"] == "cleanfid" and ident["count"] == 70_000 and ident["content_hash"].startswith("sha256:")
    assert r["num_ref"] == 70_000 and any("256px" in w for w in r["warnings"])  # 8 px generator vs 256 px stats


def test_published_statistics_offline_and_bad_names(tmp_path, net, G):
    ext = FeatureExtractor(net, mode="legacy_pytorch", name="tiny")
    with pytest.raises(NatGanError) as info:
        fid_for_generator(G, "cleanfid:ffhq:256:trainval70k", num=4, extractor=ext, progress=False)
    msg = str(info.value)
    assert "https://www.cs.cmu.edu/~clean-fid/stats/ffhq_legacy_pytorch_trainval70k_256.npz" in msg
    assert str(tmp_path / "cache" / "cleanfid-stats" / "ffhq_legacy_pytorch_trainval70k_256.npz") in msg
    for bad, match in (("cleanfid:ffhq:512:trainval70k", "publishes no such"),
                       ("cleanfid:ffhq", "expected cleanfid:NAME"),
                       ("cleanfid:lsun_church:256:trainfull", "--mode clean only")):
        with pytest.raises(ConfigError, match=match):
            fid_for_generator(G, bad, num=4, extractor=ext, progress=False)
    with pytest.raises(ConfigError, match="no KID features"):
        fid_for_generator(G, "cleanfid:ffhq:256:trainval", num=4, extractor=ext, progress=False, kid=True)


# ------------------------------------------------------------------------------------ the CLI


def recipe_for(data_path: str) -> dict:
    return {"model": {"name": TINY, "resolution": 8}, "data": {"path": data_path},
            "train": {}, "eval": {"num": 12, "mode": "clean", "reference": ""}}


@pytest.fixture
def fake_inception(monkeypatch):
    """The CLI's Inception replaced by the tiny network (a 2048-d sqrtm alone takes ~20 s on this machine);
    loading real-format weights is covered by the tests above. Records the arguments it was built with."""
    from natgan.metrics import runner

    calls = []

    def build(mode, *, device="cpu", inception=None, weights_dir=None):
        calls.append({"mode": mode, "inception": inception, "weights_dir": weights_dir})
        return FeatureExtractor(TinyFeatures().eval(), mode=mode, name="tf-inception-2015-12-05", device=device)

    monkeypatch.setattr(runner, "build_inception", build)
    return calls


def test_cli_fid_from_recipe_records_in_checkpoint(tmp_path, capsys, fake_inception):
    data = make_folder(tmp_path / "data", 16, seed=11)
    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck, recipe=recipe_for(str(data)))
    before = ck.read_bytes()
    code, out, err = run_cli(["fid", "--ckpt", str(ck), "--device", "cpu", "--workers", "0", "--json", "-q"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "clean" and result["num_gen"] == 12 and result["num_ref"] == 16  # from recipe eval
    assert result["reference"]["path"] == str(data) and result["extractor"] == "tf-inception-2015-12-05"
    assert result["generated"]["model"] == TINY and result["generated"]["ema"] is True
    # by default the checkpoint is not rewritten: the result goes beside it
    assert ck.read_bytes() == before and result["recorded_in"] == str(tmp_path / "run.pt.metrics.json")
    beside = json.loads((tmp_path / "run.pt.metrics.json").read_text())
    assert len(beside) == 1 and beside[0]["fid"] == result["fid"] and beside[0]["step"] == 7
    assert beside[0]["checkpoint"] == "run.pt" and beside[0]["ema"] is True
    code, out, err = run_cli(["fid", "--ckpt", str(ck), "--device", "cpu", "--workers", "0", "--json", "-q",
                              "--record-in-checkpoint"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["recorded_in"] == str(ck) and len(json.loads((tmp_path / "run.pt.metrics.json").read_text())) == 1
    history = ckpt_io.load(ck)["metrics"]
    assert len(history) == 1 and history[0]["fid"] == result["fid"] and history[0]["step"] == 7
    assert history[0]["reference"]["content_hash"] == result["reference"]["content_hash"]

    code, out, _ = run_cli(["fid", "--ckpt", str(ck), "--num", "5", "--no-record", "--json", "-q", "--workers", "0",
                            "--inception", str(tmp_path / "w.pt"), "--mode", "legacy_tensorflow"], capsys)
    assert code == 0 and json.loads(out)["num_gen"] == 5 and len(ckpt_io.load(ck)["metrics"]) == 1
    assert fake_inception[-1] == {"mode": "legacy_tensorflow", "inception": tmp_path / "w.pt", "weights_dir": None}

    code, out, _ = run_cli(["fid", "--ckpt", str(ck), "--num", "5", "--no-record", "-q", "--workers", "0"], capsys)
    assert code == 0 and "FID " in out and "reference" in out and "cached statistics" in out
    assert len(json.loads((tmp_path / "run.pt.metrics.json").read_text())) == 1  # --no-record: nowhere


def test_cli_fid_announces_the_sample_count_and_an_estimate(tmp_path, capsys, fake_inception):
    """Before the long part of a run, fid says how many images it generates (and where the number came from),
    then, after the first batch, the extrapolated time; -q says nothing."""
    data = make_folder(tmp_path / "data", 16, seed=11)
    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck, recipe=recipe_for(str(data)))
    code, _, err = run_cli(["fid", "--ckpt", str(ck), "--workers", "0", "--batch", "4", "--no-record"], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert "scoring 12 generated images (eval.num of the checkpoint's recipe; --num N to change) with fid on cpu" \
        in lines
    estimate = [line for line in lines if line.startswith("estimate: 12 images at ")]
    assert len(estimate) == 1 and "img/s (first batch) = about " in estimate[0], err
    code, _, err = run_cli(["fid", "--ckpt", str(ck), "--workers", "0", "--batch", "4", "--no-record", "-q",
                            "--num", "8"], capsys)
    assert code == 0 and "scoring" not in err and "estimate" not in err


def test_first_batch_estimate_extrapolates_once():
    from natgan.data.progress import FirstBatchEstimate, format_duration

    now = [100.0]
    seen = []
    est = FirstBatchEstimate(50_000, seen.append, clock=lambda: now[0])
    now[0] += 8.0
    est.advance(64)
    now[0] += 1.0
    est.advance(64)
    assert seen == [{"total": 50_000, "done": 64, "images_per_s": 8.0, "eta_s": (50_000 - 64) / 8.0}]
    assert format_duration(seen[0]["eta_s"]) == "1 h 44 min"
    assert (format_duration(95), format_duration(4.2)) == ("1 min 35 s", "4 s")
    single = []
    FirstBatchEstimate(10, single.append).advance(10)  # all done in one batch: nothing to estimate
    assert single == []


def test_the_demo_recipe_scores_about_its_dataset():
    """The demo dataset holds 1,797 digits; fid on the demo run must not default to 50,000 samples."""
    from natgan import recipe

    assert 1797 <= recipe.load(Path(__file__).resolve().parents[1] / "recipes/demo.toml").eval.num <= 5000


def test_cli_fid_errors(tmp_path, capsys, fake_inception):
    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck, recipe=recipe_for(str(tmp_path / "gone.lmdb")))
    code, _, err = run_cli(["fid", "--ckpt", str(ck)], capsys)
    assert code == 1 and "gone.lmdb" in err and "data.path" in err and "--data" in err and err.count("\n") == 1
    tiny_checkpoint(ck)
    code, _, err = run_cli(["fid", "--ckpt", str(ck)], capsys)
    assert code == 2 and "names no dataset" in err
    code, _, err = run_cli(["fid", "--ckpt", str(ck), "--data", str(tmp_path), "--mode", "fancy"], capsys)
    assert code == 2 and "--mode 'fancy'" in err
    code, _, err = run_cli(["fid", str(tmp_path)], capsys)
    assert code == 2 and "two datasets" in err
    assert ckpt_io.load(ck)["metrics"] == []


def test_cli_fid_without_weights_offline(tmp_path, capsys, monkeypatch):
    a, b = make_folder(tmp_path / "a", 4, seed=1), make_folder(tmp_path / "b", 4, seed=2)
    code, _, err = run_cli(["fid", str(a), str(b), "--mode", "legacy_pytorch"], capsys)
    assert code == 1 and "pt_inception-2015-12-05-6726825d.pth" in err and "NATGAN_INCEPTION" in err


def test_cli_fid_names_every_missing_weights_file_at_once(tmp_path, capsys, monkeypatch):
    """Offline, fid,kid,pr,dc,is,ppl needs three files: all three are named in one error, before any work."""
    monkeypatch.setenv("NATGAN_OFFLINE", "1")
    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck)
    before = ck.read_bytes()
    a = make_folder(tmp_path / "a", 4, seed=1)
    code, _, err = run_cli(["fid", "--ckpt", str(ck), "--data", str(a), "--metrics", "fid,kid,pr,dc,is,ppl",
                            "--num", "10", "-q"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: 3 weights files are missing"), err
    items = lines[0].split("; ")
    for name in ("pt_inception-2015-12-05-6726825d.pth", "vgg16-397923af.pth", "vgg.pth"):
        assert sum(f"{name} (" in item and "https://" in item and "NATGAN_OFFLINE" in item for item in items) == 1
    assert ck.read_bytes() == before


def test_cli_fid_dataset_vs_dataset(tmp_path, capsys, fake_inception):
    a, b = make_folder(tmp_path / "a", 10, seed=1), make_folder(tmp_path / "b", 12, seed=2)
    code, out, err = run_cli(["fid", str(a), str(b), "--mode", "legacy_tensorflow", "--json", "-q", "--workers", "0"],
                             capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["num_gen"] == 10 and r["num_ref"] == 12 and r["generated"]["kind"] == "dataset"
    code, out, _ = run_cli(["fid", str(a), str(a), "--mode", "clean", "--json", "-q", "--workers", "0"], capsys)
    assert abs(json.loads(out)["fid"]) < 1e-3


def test_record_refuses_a_checkpoint_that_changed(tmp_path):
    from natgan.metrics.record import fingerprint

    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck)
    before = fingerprint(ck)
    tiny_checkpoint(ck)  # the trainer rewrote latest.pt meanwhile
    os.utime(ck, ns=(before[1] + 10**9, before[1] + 10**9))
    with pytest.raises(CheckpointError, match="changed while FID was running"):
        record_in_checkpoint(ck, {"metric": "fid", "fid": 1.0}, ema=True, expected=before)
    entry = record_in_checkpoint(ck, {"metric": "fid", "fid": 1.0}, ema=True)
    assert entry["step"] == 7 and ckpt_io.load(ck)["metrics"][-1]["fid"] == 1.0


def test_cached_reference_statistics_are_keyed_on_the_weights_file_content(tmp_path, net, G, monkeypatch):
    torch.manual_seed(1)
    first = write_fake_torchscript(tmp_path / "w1")
    torch.manual_seed(2)
    second = write_fake_torchscript(tmp_path / "w2")  # same file name, other weights
    monkeypatch.setenv("NATGAN_TRUST_TORCHSCRIPT", os.pathsep.join([str(first), str(second)]))
    id1, id2 = (build_inception("clean", inception=p).weights_id for p in (first, second))
    assert id1 and id2 and id1 != id2 and build_inception("clean", inception=first).weights_id == id1

    ref = make_folder(tmp_path / "ref", 8, seed=7)
    kw = dict(num=4, batch_size=4, progress=False, workers=0)
    ext = FeatureExtractor(net, mode="clean", name="tf-inception-2015-12-05")
    ext.weights_id = id1
    one = fid_for_generator(G, str(ref), extractor=ext, **kw)
    assert fid_for_generator(G, str(ref), extractor=ext, **kw)["reference_cached"]
    ext.weights_id = id2
    assert not fid_for_generator(G, str(ref), extractor=ext, **kw)["reference_cached"]
    assert one["fid"] > 0


def test_an_empty_inception_file_is_refused_with_one_line(tmp_path):
    empty = tmp_path / "inception-2015-12-05.pt"
    empty.write_bytes(b"")
    with pytest.raises(NatGanError, match=r"--inception .*inception-2015-12-05.pt: empty file"):
        build_inception("clean", inception=empty)


def test_folders_of_different_sizes_are_each_scored_at_their_own_size(tmp_path, net):
    small = make_folder(tmp_path / "small", 10, seed=1, size=8)
    large = make_folder(tmp_path / "large", 10, seed=2, size=16)
    kw = dict(mode="legacy_pytorch", extractor=FeatureExtractor(net, mode="legacy_pytorch"), batch_size=5,
              progress=False, workers=0, use_cache=False)
    ab = fid_for_datasets(small, str(large), **kw)
    ba = fid_for_datasets(large, str(small), **kw)
    assert ab["fid"] == pytest.approx(ba["fid"], rel=1e-6)  # argument order no longer matters
    assert ab["generated"]["resolution"] == 8 and ab["reference"]["resolution"] == 16
    assert any("8px but the reference is 16px" in w for w in ab["warnings"])


def test_a_folder_of_mixed_sizes_is_named_in_the_protocol_and_warned_about(tmp_path, net):
    """A folder served without a size is served at its first image's size; mixed sizes must not pass silently."""
    mixed = make_folder(tmp_path / "mixed", 6, seed=1, size=8)
    big = make_folder(tmp_path / "big", 6, seed=2, size=16)
    for i, f in enumerate(sorted(big.iterdir())):
        f.rename(mixed / f"{100 + i:04d}.png")   # sorted after the 8px files
    uniform = make_folder(tmp_path / "uniform", 6, seed=3, size=8)
    kw = dict(mode="legacy_pytorch", extractor=FeatureExtractor(net, mode="legacy_pytorch"), batch_size=4,
              progress=False, workers=0, use_cache=False)
    for a, b in ((mixed, uniform), (uniform, mixed)):
        r = fid_for_datasets(a, str(b), **kw)
        side = r["generated"] if a is mixed else r["reference"]
        assert side["mixed_sizes"] == ["8x8", "16x16"] and "mixed sizes (8x8, 16x16), all served" in side["description"]
        assert any("several sizes (8x8, 16x16)" in w and "resized to 8px" in w for w in r["warnings"])
    clean = fid_for_datasets(uniform, str(make_folder(tmp_path / "u2", 6, seed=4, size=8)), **kw)
    assert "warnings" not in clean and "mixed_sizes" not in clean["generated"]


@pytest.mark.parametrize("family", ["stylegan2", "ganformer", "stylenat", "styleswin", "hit"])
def test_generator_fid_does_not_depend_on_the_batch_size(tmp_path, net, family):
    import importlib

    from natgan.models import create

    tiny = importlib.import_module(f"test_{family}").TINY
    torch.manual_seed(0)
    G = create(family, **tiny).generator.eval()
    ref = make_folder(tmp_path / "ref", 6, seed=3, size=tiny["resolution"])
    kw = dict(num=6, extractor=FeatureExtractor(net, mode="legacy_pytorch"), progress=False, workers=0,
              use_cache=False, noise_mode="const")   # the metrics' default, random, is drawn per batch
    one = fid_for_generator(G, str(ref), batch_size=2, **kw)
    other = fid_for_generator(G, str(ref), batch_size=3, **kw)
    assert one["fid"] == pytest.approx(other["fid"], rel=1e-5)
    assert one["generated"]["noise_mode"] == "const"


def test_cleanfid_frechet_distance_survives_scipy_without_sqrtm_disp(monkeypatch):
    """SciPy 1.18 removed sqrtm(disp=); clean-fid 0.1.35 still passes it. The shim keeps clean-fid's value."""
    import scipy.linalg

    from natgan.metrics import cleanfid_compat

    real_sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda A: real_sqrtm(A))  # SciPy >= 1.18: no `disp`
    monkeypatch.setattr(cleanfid_fid, "linalg", scipy.linalg)  # clean-fid as shipped; restored after the test
    rng = np.random.default_rng(0)
    a, b = statistics(rng.normal(size=(50, 6))), statistics(rng.normal(1.0, 2.0, size=(50, 6)))
    with pytest.raises(TypeError, match="disp"):
        cleanfid_fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    assert cleanfid_compat.sqrtm_takes_disp() is False
    assert cleanfid_compat.install() is True
    covmean = real_sqrtm(a.sigma @ b.sigma).real
    expected = ((a.mu - b.mu) ** 2).sum() + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
