"""What the reference-statistics cache stores (references only, big enough sets, the covariance only where a
metric uses it), its size cap, and `nat-gan cache list|clear`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from natgan.metrics import FeatureExtractor, evaluate_datasets, evaluate_generator
from natgan.metrics import cache as cache_mod
from natgan.metrics.cache import StatsCache, StatsKey
from test_fid import G, TinyFeatures, _isolated_cache, fake_inception, make_folder, recipe_for  # noqa: F401
from test_sample import tiny_checkpoint
from test_metrics import TinyVGG
from test_sample import run_cli


def stats_files(tmp_path):
    return sorted((tmp_path / "cache" / "fid-stats").glob("*.npz"))


def extractors():
    from natgan.metrics import vgg

    return {"inception": FeatureExtractor(TinyFeatures().eval(), mode="clean", name="tiny-inception"),
            "vgg16": vgg.ImageExtractor(TinyVGG().eval(), name="tiny-vgg", protocol="tiny VGG stand-in")}


def test_vgg16_reference_has_no_covariance(tmp_path, G):
    """precision/recall on VGG16 features need the features, not their 4096² covariance: it is neither
    computed nor stored; FID's Inception reference keeps its covariance."""
    ref = make_folder(tmp_path / "ref", 12, seed=3)
    result = evaluate_generator(G, str(ref), metrics=["fid", "pr"], num=8, batch_size=4, progress=False, workers=0,
                                extractors=extractors(), pr_features="vgg16", mode="clean")
    stored = {}
    for path in stats_files(tmp_path):
        with np.load(path) as data:
            stored[json.loads(str(data["meta"]))["extractor"]] = set(data.files)
    assert stored["tiny-vgg"] == {"mu", "meta", "feats"}
    assert {"mu", "sigma", "meta"} <= stored["tiny-inception"]
    assert np.isfinite(result["fid"]) and 0 <= result["precision"] <= 1
    # a later FID on the same VGG-free key still finds its covariance; pr again is a cache hit
    again = evaluate_generator(G, str(ref), metrics=["pr"], num=8, batch_size=4, progress=False, workers=0,
                               extractors=extractors(), pr_features="vgg16", mode="clean")
    assert again["reference_cached"] and again["precision"] == result["precision"]


def test_the_compared_side_of_a_dataset_run_is_not_stored(tmp_path):
    a, b = make_folder(tmp_path / "a", 10, seed=1), make_folder(tmp_path / "b", 12, seed=2)
    kw = dict(mode="clean", progress=False, workers=0, extractor=extractors()["inception"])
    first = evaluate_datasets(a, str(b), **kw)
    files = stats_files(tmp_path)
    assert len(files) == 1 and json.loads(str(np.load(files[0])["meta"]))["count"] == 12  # B only
    assert not first["reference_cached"]
    assert evaluate_datasets(a, str(b), **kw)["reference_cached"]


def test_small_sets_are_not_stored(tmp_path, G, monkeypatch):
    monkeypatch.setattr(cache_mod, "MIN_CACHED_IMAGES", 1000)  # the shipped threshold
    ref = make_folder(tmp_path / "ref", 16, seed=3)
    result = evaluate_generator(G, str(ref), metrics=["fid"], num=8, batch_size=4, progress=False, workers=0,
                                extractor=extractors()["inception"], mode="clean")
    assert np.isfinite(result["fid"]) and stats_files(tmp_path) == [] and "stats_file" not in result["reference"]
    assert cache_mod.MIN_CACHED_IMAGES == 1000 and cache_mod.worth_caching(1000)


def key(i: int) -> StatsKey:
    return StatsKey(content_hash=f"h{i}", resolution=8, mode="clean", extractor="x", count=2000, subset="all")


def test_the_cache_is_capped_least_recently_used_first(tmp_path, monkeypatch):
    cache = StatsCache(tmp_path / "c")
    mu = np.zeros(64 * 1024)  # 512 KiB per entry
    monkeypatch.setenv("NATGAN_CACHE_MAX_MB", "1.2")
    for i in range(2):
        assert cache.save(key(i), mu, None) is not None
    old = cache.path(key(0))
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(cache.path(key(1)), (2_000_000, 2_000_000))
    assert cache.load(key(0), need_sigma=False) is not None  # a hit makes entry 0 the most recent
    cache.save(key(2), mu, None)
    names = {e.path for e in cache.entries()}
    assert names == {cache.path(key(0)), cache.path(key(2))}  # entry 1, least recently used, went
    monkeypatch.setenv("NATGAN_CACHE_MAX_MB", "0.1")
    assert cache.save(key(3), mu, None) is None and not cache.path(key(3)).exists()  # too big for the cap
    monkeypatch.setenv("NATGAN_CACHE_MAX_MB", "lots")
    with pytest.raises(Exception, match="NATGAN_CACHE_MAX_MB"):
        cache.save(key(4), mu, None)


def test_cache_list_and_clear(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    cache = StatsCache()
    cache.save(key(1), np.zeros(1000), np.zeros((10, 10)))
    cache.save(key(2), np.zeros(1000), None)
    weights = tmp_path / "cache" / "weights"
    weights.mkdir(parents=True)
    (weights / "vgg16.pth").write_bytes(b"x" * 100)
    code, out, err = run_cli(["cache", "list", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    sections = {s["name"]: s for s in report["sections"]}
    assert sections["fid-stats"]["files"] == 2 and sections["weights"] == {**sections["weights"], "files": 1,
                                                                            "bytes": 100}
    assert {e["content_hash"] for e in report["stats"]} == {"h1", "h2"} and report["root"] == str(tmp_path / "cache")
    code, out, _ = run_cli(["cache", "list"], capsys)
    assert code == 0 and "fid-stats" in out and "reference statistics" in out
    code, out, _ = run_cli(["cache", "clear", "--older-than", "1"], capsys)  # both were used just now
    assert code == 0 and "removed 0 files" in out and len(stats_files(tmp_path)) == 2
    code, out, _ = run_cli(["cache", "clear"], capsys)
    assert code == 0 and "removed 2 files" in out and stats_files(tmp_path) == []
    assert (weights / "vgg16.pth").exists()  # weights only with --all / --section weights
    code, out, _ = run_cli(["cache", "clear", "--all", "--json"], capsys)
    assert code == 0 and json.loads(out)["files"] == 1 and not (weights / "vgg16.pth").exists()
    code, _, err = run_cli(["cache", "clear", "--section", "everything"], capsys)
    assert code == 2 and "cache section 'everything'" in err


def test_fid_reports_what_it_stored(tmp_path, capsys, fake_inception, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    data = make_folder(tmp_path / "data", 16, seed=11)
    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck, recipe=recipe_for(str(data)))
    code, out, err = run_cli(["fid", "--ckpt", str(ck), "--workers", "0", "-q", "--no-record"], capsys)
    assert code == 0, err
    assert "MB of statistics; the cache holds" in out and "`nat-gan cache list`" in out
    code, out, _ = run_cli(["fid", "--ckpt", str(ck), "--workers", "0", "-q", "--no-record"], capsys)
    assert code == 0 and "(cached statistics)" in out and "MB of statistics" not in out
