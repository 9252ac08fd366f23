"""The metric registry and the metrics beside FID: KID, precision/recall, density/coverage, IS.

Each metric is checked against an independent implementation on the same feature arrays (torch-fidelity
for precision/recall, IS and KID; the authors' ``prdc`` package for density/coverage) and on hand-worked
cases; the registry runs end to end with tiny random-weight extractors (no weights, no network).
"""

from __future__ import annotations

import json

import numpy as np
import prdc
import pytest
import torch
from torch import nn
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from natgan.errors import ConfigError, DataError, NatGanError
from natgan.metrics import FeatureExtractor, evaluate_datasets, evaluate_generator
from natgan.metrics import registry
from natgan.metrics.inception_score import inception_score
from natgan.metrics.manifold import manifold_scores, nearest_distances
from natgan.metrics.stats import kernel_inception_distance
from test_fid import G, TinyFeatures, _isolated_cache, make_folder  # noqa: F401 - fixtures
from test_train import digits  # noqa: F401 - fixture


def _sets(seed=0, n_real=240, n_fake=200, d=16, shift=0.3):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, d)).astype(np.float32)
    fake = (rng.normal(size=(n_fake, d)) * 1.2 + shift).astype(np.float32)
    return real, fake


# ------------------------------------------------------------------------- precision / recall, density / coverage


@pytest.mark.parametrize("seed", [0, 1])
def test_precision_recall_equal_torch_fidelity(seed):
    real, fake = _sets(seed)
    ours = manifold_scores(real, fake)
    theirs = prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=3,
                                    prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1
    assert ours["precision"] == pytest.approx(theirs["precision"], rel=1e-6)
    assert ours["recall"] == pytest.approx(theirs["recall"], rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_density_coverage_equal_the_authors_prdc(seed):
    real, fake = _sets(seed)
    ours = manifold_scores(real, fake)
    theirs = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    assert 0 < ours["coverage"] < 1 and ours["density"] > 0
    assert ours["density"] == pytest.approx(theirs["density"], rel=1e-6)
    assert ours["coverage"] == pytest.approx(theirs["coverage"], rel=1e-6)


def test_manifold_metrics_stay_exact_on_features_with_a_large_common_offset():
    """Pairwise distances ~7e-4 of the norms: float32 |a|^2 + |b|^2 - 2ab alone gave precision 0.95 instead
    of 0.24 here; the answer must be prdc's (float64 sklearn distances) and the exact float64 one."""
    rng = np.random.default_rng(0)
    real = (rng.normal(size=(400, 64)) + 2000).astype(np.float32)
    fake = (rng.normal(size=(300, 64)) * 1.1 + 2000.2).astype(np.float32)
    r, f = real.astype(np.float64), fake.astype(np.float64)
    rr = np.sqrt(((r[:, None] - r[None]) ** 2).sum(-1))
    ff = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
    rf = np.sqrt(((r[:, None] - f[None]) ** 2).sum(-1))
    r3, r5, f3 = np.sort(rr, 1)[:, 3], np.sort(rr, 1)[:, 5], np.sort(ff, 1)[:, 3]
    exact = {"precision": (rf <= r3[:, None]).any(0).mean(), "recall": (rf.T <= f3[:, None]).any(0).mean(),
             "density": (rf < r5[:, None]).sum() / (5 * len(f)), "coverage": (rf.min(1) < r5).mean()}
    ours = manifold_scores(real, fake, chunk_bytes=4 * 400 * 64)
    assert ours == pytest.approx(exact, abs=1e-9)
    dc = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    pr = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=3)
    assert (ours["density"], ours["coverage"]) == pytest.approx((dc["density"], dc["coverage"]), abs=1e-9)
    assert (ours["precision"], ours["recall"]) == pytest.approx((pr["precision"], pr["recall"]), abs=1e-9)
    assert 0.1 < ours["precision"] < 0.5


def test_chunking_does_not_change_the_numbers():
    real, fake = _sets(2)
    whole = manifold_scores(real, fake)
    tiny_chunks = manifold_scores(real, fake, chunk_bytes=4 * len(real) * 7)   # 7 rows per chunk
    assert tiny_chunks == whole
    x = torch.from_numpy(real)
    expected = torch.cdist(x, x).kthvalue(4, dim=1).values     # the references' kthvalue(k + 1)
    torch.testing.assert_close(nearest_distances(x, 3, chunk_bytes=4 * len(x) * 5)[:, 2], expected)


def test_manifold_hand_worked_cases():
    real, _ = _sets(3)
    same = manifold_scores(real, real.copy())
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = manifold_scores(real, real + 1000.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # 1-D, k = 1: real {0, 1, 3} has radii {1, 1, 2}; fake {0.5, 10} has radii {9.5, 9.5}.
    r = manifold_scores(np.array([[0.0], [1.0], [3.0]]), np.array([[0.5], [10.0]]), pr_k=1, dc_k=1)
    assert r["precision"] == 0.5          # 0.5 lies in the ball of 0 (and of 1); 10 in none
    assert r["recall"] == 1.0             # every real point lies within 9.5 of 0.5
    assert r["density"] == 1.0            # 0.5 is inside 2 balls, 10 inside 0: (2 + 0) / (k * 2)
    assert r["coverage"] == pytest.approx(2 / 3)   # 3's nearest fake (0.5) is 2.5 away, beyond its radius 2


def test_manifold_errors_are_clear():
    with pytest.raises(NatGanError, match="more than 5 feature vectors"):
        manifold_scores(np.zeros((5, 3)), np.zeros((9, 3)))
    with pytest.raises(NatGanError, match="one D"):
        manifold_scores(np.zeros((9, 3)), np.zeros((9, 4)))


# ------------------------------------------------------------------------------------------------ IS and KID


def test_inception_score_equals_torch_fidelity():
    logits = np.random.default_rng(4).normal(size=(503, 1008)).astype(np.float32) * 3
    mean, std = inception_score(logits)
    theirs = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=False)
    assert mean == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert std == pytest.approx(theirs["inception_score_std"], rel=1e-6)
    assert mean > 1 and std > 0


def test_inception_score_hand_worked_cases():
    classes = 7
    one_hot_uniform = np.eye(classes)[np.arange(10 * classes * 3) % classes] * 60.0
    mean, std = inception_score(one_hot_uniform)
    assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    mean, _ = inception_score(np.tile(np.arange(5.0), (40, 1)))   # every image the same prediction: 1
    assert mean == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(NatGanError, match="at least 10 images"):
        inception_score(np.zeros((9, 4)))


def test_kid_equals_torch_fidelity_when_the_subset_is_the_whole_set():
    real, fake = _sets(5, n_real=150, n_fake=150)
    ours = kernel_inception_distance(real, fake, max_subset_size=150, num_subsets=3)
    theirs = kid_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), kid_subsets=3,
                                    kid_subset_size=150, kid_degree=3, kid_gamma=None, kid_coef0=1,
                                    rng_seed=0, verbose=False)
    assert ours == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    # by hand, 1-D with k(a, b) = (a b / 1 + 1)^3: X = {0, 1}, Y = {1, 2}
    # unbiased MMD^2 = (k(0,1) + k(1,0) + k(1,2) + k(2,1)) / (2 * 1) - 2 (k(0,1) + k(0,2) + k(1,1) + k(1,2)) / 4
    #               = (2 + 54) / 2 - 2 * 37 / 4 = 9.5
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    assert kernel_inception_distance(x, y, num_subsets=4) == pytest.approx(9.5, rel=1e-12)


def test_kid_spread_is_torch_fidelitys_std_over_clean_fids_subsets():
    """The mean is clean-fid's number exactly; the std re-derived here: the same subsets drawn as clean-fid
    draws them (global numpy RNG, generated side first), each scored by torch-fidelity's own unbiased MMD^2,
    then np.std as torch-fidelity aggregates."""
    from cleanfid.fid import kernel_distance
    from torch_fidelity.metric_kid import kernel_mmd

    from natgan.metrics.stats import kid_with_spread

    real, fake = _sets(6, n_real=90, n_fake=70)
    ours = kid_with_spread(real, fake, seed=3, num_subsets=12, max_subset_size=50)
    np.random.seed(3)
    assert ours.mean == kernel_distance(real, fake, num_subsets=12, max_subset_size=50)
    np.random.seed(3)
    mmds = []
    for _ in range(12):
        x = fake[np.random.choice(len(fake), 50, replace=False)]
        y = real[np.random.choice(len(real), 50, replace=False)]
        mmds.append(kernel_mmd(x, y, kid_degree=3, kid_gamma=None, kid_coef0=1))
    assert ours.mean == pytest.approx(np.mean(mmds), rel=1e-5)
    assert ours.std == pytest.approx(np.std(mmds), rel=1e-5) and ours.std > 0
    assert (ours.subset_size, ours.subsets) == (50, 12)
    # the subset size actually used is capped by the smaller side
    assert kid_with_spread(real, fake[:30], num_subsets=2).subset_size == 30


# ----------------------------------------------------------------------------------------------- registry


def test_registry_names_outputs_and_parsing():
    assert list(registry.METRICS) == ["fid", "kid", "pr", "dc", "is", "ppl", "intra_fid"]
    assert registry.parse_metrics("fid, KID,fid") == ["fid", "kid"]
    assert registry.parse_metrics(["pr", "dc"]) == ["pr", "dc"]
    with pytest.raises(ConfigError,
                       match="'fd': unknown metric; expected some of fid, kid, pr, dc, is, ppl, intra_fid"):
        registry.parse_metrics("fid,fd")
    with pytest.raises(ConfigError, match="no metric named"):
        registry.parse_metrics(" , ")
    keys = registry.outputs()
    assert keys["fid"].better == "lower" and keys["precision"].better == "higher" and keys["is"].better == "higher"
    assert registry.metric_of_output("coverage").name == "dc"
    assert registry.is_better("fid", 3.0, 4.0) and not registry.is_better("fid", 5.0, 4.0)
    assert registry.is_better("recall", 0.6, 0.5) and registry.is_better("kid", 1.0, None)


class Counting:
    """A named callable extractor that counts images (to see features computed once per feature set)."""

    def __init__(self, net, name, logits_weight=None):
        self.net, self.name, self.images, self.logits_weight = net, name, 0, logits_weight

    def __call__(self, images):
        self.images += len(images)
        return self.net(images.float())


class TinyVGG(nn.Module):
    """A different fixed random network standing in for VGG16 (12 features)."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(77)
        self.proj = nn.Linear(3 * 4 * 4, 12)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)

    def forward(self, x):
        return torch.relu(self.proj(nn.functional.adaptive_avg_pool2d(x / 255, 4).flatten(1)))


def test_all_metrics_share_one_generation_and_one_pass_per_feature_set(tmp_path, G):
    ref = make_folder(tmp_path / "ref", 40, seed=8)
    weight = np.random.default_rng(0).normal(size=(11, 8)).astype(np.float32)
    inc, vgg = Counting(TinyFeatures().eval(), "tiny-inc", weight), Counting(TinyVGG().eval(), "tiny-vgg")
    calls = {"n": 0}
    original = G.synthesis

    def counted(w):
        calls["n"] += len(w)
        return original(w)

    G.synthesis = counted
    r = evaluate_generator(G, str(ref), metrics="fid,kid,pr,dc,is", num=30, extractors={"inception": inc, "vgg16": vgg},
                           batch_size=8, progress=False, workers=0, mode="clean")
    assert calls["n"] == 30 and inc.images == 30 + 40 and vgg.images == 30 + 40
    assert r["metrics"] == ["fid", "kid", "pr", "dc", "is"]
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "is", "is_std"):
        assert isinstance(r[key], float), key
    assert r["details"]["pr"]["features"] == "vgg16" and r["details"]["fid"]["features"] == "inception"
    assert "k = 3" in r["details"]["pr"]["protocol"] and "k = 5" in r["details"]["dc"]["protocol"]
    assert "10 splits" in r["details"]["is"]["protocol"] and "11 classes" in r["details"]["is"]["protocol"]
    assert r["details"]["pr"]["num_ref"] == 40
    json.dumps(r)

    # the same numbers from the functions on the same features, computed by hand
    gen_inc = np.concatenate([inc.net(b.float()).detach().numpy()
                              for _, b in __import__("natgan.sampling", fromlist=["ImageGenerator"])
                              .ImageGenerator(G, batch_size=8).batches(range(30))])
    mean, _ = inception_score(gen_inc.astype(np.float64) @ weight.T.astype(np.float64))
    assert r["is"] == pytest.approx(mean, rel=1e-6)

    # Inception features for pr/dc by option: no VGG network is built or run
    vgg.images = 0
    r2 = evaluate_generator(G, str(ref), metrics="pr", num=30, extractors={"inception": inc, "vgg16": vgg},
                            batch_size=8, progress=False, workers=0, pr_features="inception")
    assert vgg.images == 0 and r2["details"]["pr"]["features"] == "inception"


def test_generated_manifold_metrics_match_the_functions(tmp_path, G):
    a, b = make_folder(tmp_path / "a", 36, seed=1), make_folder(tmp_path / "b", 40, seed=2)
    vgg = Counting(TinyVGG().eval(), "tiny-vgg")
    r = evaluate_datasets(str(a), str(b), metrics=["pr", "dc"], extractors={"vgg16": vgg}, batch_size=8,
                          progress=False, workers=0)
    from natgan.data import open_dataset

    def feats(path):
        src = open_dataset(path, resolution=8)
        return np.concatenate([vgg.net(torch.from_numpy(np.stack([src[i] for i in range(len(src))]))
                                       .permute(0, 3, 1, 2).float()).detach().numpy()])

    expected = manifold_scores(feats(b), feats(a))
    assert {k: r[k] for k in expected} == pytest.approx(expected, rel=1e-6)
    assert "fid" not in r and r["num_gen"] == 36 and r["num_ref"] == 40


def test_every_extractor_cache_is_keyed_on_its_weights_and_results_record_them(tmp_path, G, monkeypatch):
    """Replacing a feature network's weights under the same name recomputes the reference (it used to reuse
    the old network's features for VGG16), and every result names the weights that made its numbers."""
    from natgan.metrics import vgg as vgg_mod
    from natgan.metrics.vgg import ImageExtractor
    from natgan.metrics.weights import weights_digest

    a, b = make_folder(tmp_path / "a", 20, seed=1), make_folder(tmp_path / "b", 24, seed=2)

    def run(net, weights_id):
        ext = ImageExtractor(net, name="tiny-vgg", protocol="tiny", weights_id=weights_id)
        return evaluate_datasets(str(a), str(b), metrics=["pr", "dc"], extractors={"vgg16": ext}, batch_size=8,
                                 progress=False, workers=0)

    first = run(TinyVGG().eval(), "1111")
    assert not first["reference_cached"] and run(TinyVGG().eval(), "1111")["reference_cached"]
    other = TinyVGG().eval()
    with torch.no_grad():
        other.proj.weight.mul_(-1.5)
    swapped = run(other, "2222")
    assert not swapped["reference_cached"] and swapped["precision"] != first["precision"]
    assert swapped["details"]["pr"]["weights_sha256"] == "2222" == swapped["details"]["dc"]["weights_sha256"]
    assert swapped["feature_sets"]["vgg16"]["weights_sha256"] == "2222"

    # the real VGG16 extractor takes its identity from the file's digest (a tiny stand-in file here)
    fake_file = tmp_path / "w" / "vgg16-397923af.pth"
    fake_file.parent.mkdir()
    fake_file.write_bytes(b"first weights")
    monkeypatch.setattr(vgg_mod, "locate", lambda *a, **k: fake_file)
    monkeypatch.setattr(vgg_mod, "load_vgg16_state", lambda path: None)   # random init, no 528 MB file
    monkeypatch.setenv("NATGAN_UNOFFICIAL_WEIGHTS", str(fake_file))  # not the official digest: named explicitly
    one = vgg_mod.build_vgg16().weights_id
    assert one == weights_digest(fake_file)
    fake_file.write_bytes(b"other, longer weights")
    two = vgg_mod.build_vgg16().weights_id
    assert len(one) == 16 and one != two and two == weights_digest(fake_file)
    assert vgg_mod.build_vgg16(random_weights=True).weights_id == "random-init"


def test_metric_input_errors(tmp_path, G):
    ref = make_folder(tmp_path / "ref", 12, seed=8)
    inc = Counting(TinyFeatures().eval(), "tiny-inc")
    kw = dict(extractors={"inception": inc}, batch_size=4, progress=False, workers=0)
    with pytest.raises(NatGanError, match="IS needs the Inception classifier"):
        evaluate_generator(G, str(ref), metrics="is", num=10, **kw)
    with pytest.raises(ConfigError, match="metric 'is' needs at least 10 generated images"):
        evaluate_generator(G, str(ref), metrics="is", num=9, **kw)
    with pytest.raises(DataError, match="clean-fid publishes Inception statistics only"):
        evaluate_generator(G, "cleanfid:ffhq:256:trainval70k", metrics="pr", num=10, pr_features="vgg16",
                           extractors={"vgg16": inc}, batch_size=4, progress=False)
    with pytest.raises(ConfigError, match="--pr-features 'clip'"):
        evaluate_generator(G, str(ref), metrics="pr", num=10, pr_features="clip", **kw)
    with pytest.raises(ConfigError, match="give a reference"):
        evaluate_generator(G, None, metrics="fid", num=10, **kw)
    # IS alone needs no reference at all
    inc.logits_weight = np.eye(8, dtype=np.float32)
    assert evaluate_generator(G, None, metrics="is", num=10, **kw)["is"] >= 1.0


# ------------------------------------------------------------------------------------------------- VGG16


def test_vgg16_extractor_reads_fc2_after_relu_of_torchvision_vgg16():
    from torchvision.models import vgg16

    from natgan.metrics.vgg import build_vgg16

    torch.manual_seed(0)
    ext = build_vgg16(random_weights=True)
    images = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    feats = ext(images)
    assert feats.shape == (2, 4096) and (feats >= 0).all() and (feats > 0).any()
    assert "RANDOM-WEIGHT" in ext.protocol and ext.name.endswith("-random")
    # the same layer of torchvision's own model with the same weights
    ref = vgg16(weights=None).eval()
    missing = ref.load_state_dict({k.replace("fc.", "classifier."): v for k, v in ext.network.state_dict().items()},
                                  strict=False).missing_keys
    assert missing == ["classifier.6.weight", "classifier.6.bias"]   # only the 1000-class layer is not used
    x = nn.functional.interpolate(images.float(), size=(224, 224), mode="bilinear", align_corners=False) / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        fc2 = ref.classifier[4](ref.classifier[3](ref.classifier[1](ref.classifier[0](
            torch.flatten(ref.avgpool(ref.features(x)), 1)))))
    np.testing.assert_allclose(feats, fc2.numpy(), rtol=1e-4, atol=1e-5)


def test_vgg16_weights_missing_or_wrong_are_clear_errors(tmp_path, monkeypatch):
    from natgan.metrics.vgg import build_vgg16

    with pytest.raises(NatGanError) as exc:
        build_vgg16()
    msg = str(exc.value)
    assert "vgg16-397923af.pth" in msg and "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "--weights DIR or NATGAN_WEIGHTS" in msg and "--inception" not in msg
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "vgg16-397923af.pth").write_bytes(b"#!TorchScript? no, garbage")
    monkeypatch.setenv("NATGAN_WEIGHTS", str(weights))
    with pytest.raises(NatGanError, match="vgg16-397923af.pth: refused: sha256 [0-9a-f]{64} is not the official"):
        build_vgg16()
    monkeypatch.setenv("NATGAN_UNOFFICIAL_WEIGHTS", str(weights / "vgg16-397923af.pth"))
    with pytest.raises(NatGanError, match="not torchvision's VGG16 state dict vgg16-397923af.pth"):
        build_vgg16()
    torch.save({"features.0.weight": torch.zeros(1)}, weights / "vgg16-397923af.pth")
    with pytest.raises(NatGanError, match="not torchvision's VGG16 state dict"):
        build_vgg16(weights_dir=weights)
    with pytest.raises(NatGanError, match="--weights .*: not a directory"):
        build_vgg16(weights_dir=tmp_path / "nope")


@pytest.mark.slow
def test_vgg16_loads_a_full_state_dict_from_the_weights_directory(tmp_path, monkeypatch):
    from torchvision.models import vgg16

    from natgan.metrics.vgg import build_vgg16

    torch.manual_seed(3)
    net = vgg16(weights=None)
    torch.save(net.state_dict(), tmp_path / "vgg16-397923af.pth")
    monkeypatch.setenv("NATGAN_UNOFFICIAL_WEIGHTS", str(tmp_path / "vgg16-397923af.pth"))
    ext = build_vgg16(weights_dir=tmp_path)
    assert ext.name == "torchvision-vgg16-fc2-relu" and "RANDOM" not in ext.protocol
    assert "NOT the official file" in ext.protocol
    torch.testing.assert_close(ext.network.fc[3].weight, net.classifier[3].weight)


# -------------------------------------------------------------------------------------------------- training


def test_training_evaluates_eval_metrics_logs_them_and_keeps_best(tmp_path, digits, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from natgan import checkpoint
    from natgan.train import resolve_run, train
    from test_train import tiny_recipe

    recipe_path = tiny_recipe(tmp_path, digits, iterations=6, lr_decay=False)
    overrides = ["eval.every=2", "eval.num=24", "eval.batch_per_device=8", 'eval.metrics=["fid","pr","dc"]',
                 'eval.pr_features="inception"', 'train.keep_best="fid"']
    r, _, _ = resolve_run(recipe_path=recipe_path, overrides=overrides, outdir=tmp_path / "run", resume=None)
    result = train(r, tmp_path / "run", show_progress=False,
                   fid_extractor=lambda images: images.float().mean(dim=(2, 3)) + images.float().std(dim=(2, 3)))
    assert [m["step"] for m in result.metrics] == [2, 4, 6]
    assert all({"fid", "precision", "recall", "density", "coverage"} <= set(m) for m in result.metrics)
    fids = [m["fid"] for m in result.metrics]
    best = checkpoint.load(tmp_path / "run" / "best.pt")
    info = best["extra"]["best"]
    assert info["metric"] == "fid" and info["value"] == min(fids) and info["step"] == 2 + 2 * fids.index(min(fids))
    assert best["progress"]["step"] == info["step"]
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"metrics/fid", "metrics/precision", "metrics/recall", "metrics/density", "metrics/coverage"} <= tags
    assert [e.value for e in events.Scalars("metrics/precision")] == pytest.approx(
        [m["precision"] for m in result.metrics])


def test_recipe_eval_metrics_keep_best_and_the_batch_alias():
    from natgan import recipe

    base = {"model": {"name": "_tiny_test"}}
    r = recipe.from_dict({**base, "eval": {"batch": 16}})
    assert r.eval.batch_per_device == 16 and r.eval.metrics == ["fid"] and "batch" not in r.to_dict()["eval"]
    with pytest.raises(ConfigError, match="keys 'eval.batch' and 'eval.batch_per_device' are the same setting"):
        recipe.from_dict({**base, "eval": {"batch": 16, "batch_per_device": 8}})
    with pytest.raises(ConfigError, match="key 'eval.metrics' 'ppx': unknown metric"):
        recipe.from_dict({**base, "eval": {"metrics": ["fid", "ppx"]}})
    assert recipe.from_dict({**base, "eval": {"metrics": ["KID", "is"]}}).eval.metrics == ["kid", "is"]
    with pytest.raises(ConfigError, match="'train.keep_best': expected one of fid, kid, precision"):
        recipe.from_dict({**base, "train": {"keep_best": "is_std"}, "eval": {"every": 5}})
    with pytest.raises(ConfigError, match="comes from metric 'pr', which eval.metrics \\(fid\\) does not compute"):
        recipe.from_dict({**base, "train": {"keep_best": "precision"}, "eval": {"every": 5}})
    with pytest.raises(ConfigError, match="needs periodic evaluation"):
        recipe.from_dict({**base, "train": {"keep_best": "fid"}})
    ok = recipe.from_dict({**base, "train": {"keep_best": "recall"}, "eval": {"every": 5, "metrics": ["fid", "pr"]}})
    assert ok.train.keep_best == "recall"


# ------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def tiny_networks(monkeypatch):
    """The CLI's Inception and VGG16 replaced by tiny random networks (the Inception with a 6-class classifier)."""
    from natgan.metrics import runner, vgg

    built = []

    def inception(mode, *, device="cpu", inception=None, weights_dir=None):
        built.append(("inception", weights_dir))
        return FeatureExtractor(TinyFeatures().eval(), mode=mode, name="tiny-inception", device=device,
                                logits_weight=np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32))

    def vgg16(*, device="cpu", weights_dir=None, random_weights=False):
        built.append(("vgg16", weights_dir))
        return vgg.ImageExtractor(TinyVGG().eval(), name="tiny-vgg", protocol="tiny VGG stand-in", device=device)

    monkeypatch.setattr(runner, "build_inception", inception)
    monkeypatch.setattr(vgg, "build_vgg16", vgg16)
    return built


def test_cli_metrics_from_the_flag_and_from_the_recipe(tmp_path, capsys, tiny_networks):
    from natgan import checkpoint as ckpt_io
    from test_fid import recipe_for
    from test_sample import run_cli, tiny_checkpoint

    data = make_folder(tmp_path / "data", 24, seed=11)
    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck, recipe=recipe_for(str(data)))
    code, out, err = run_cli(["fid", "--ckpt", str(ck), "--metrics", "fid,kid,pr,dc,is", "--num", "20", "--workers",
                              "0", "--json", "-q", "--weights", str(tmp_path)], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["metrics"] == ["fid", "kid", "pr", "dc", "is"] and r["details"]["pr"]["features"] == "vgg16"
    assert sorted(tiny_networks) == [("inception", tmp_path), ("vgg16", tmp_path)]   # each network built once
    entry = json.loads((tmp_path / "run.pt.metrics.json").read_text())[-1]  # recorded beside the checkpoint
    assert ckpt_io.load(ck)["metrics"] == []
    assert entry["precision"] == r["precision"] and entry["details"]["is"]["protocol"].startswith("IS (Salimans")

    code, out, err = run_cli(["fid", "--ckpt", str(ck), "--metrics", "pr,is", "--pr-features", "inception", "--num",
                              "20", "--workers", "0", "-q", "--no-record"], capsys)
    assert code == 0, err
    assert "precision" in out and "IS " in out and "k = 3" in out and "10 splits" in out and "FID" not in out

    # eval.metrics of the checkpoint's recipe is the default; --kid adds KID
    ck2 = tmp_path / "run2.pt"
    tiny_checkpoint(ck2, recipe={**recipe_for(str(data)), "eval": {**recipe_for(str(data))["eval"],
                                                                    "metrics": ["dc"], "batch": 4}})
    code, out, err = run_cli(["fid", "--ckpt", str(ck2), "--num", "20", "--kid", "--workers", "0", "--json", "-q"],
                             capsys)
    assert code == 0, err
    assert json.loads(out)["metrics"] == ["dc", "kid"]


def test_cli_metrics_errors(tmp_path, capsys, tiny_networks):
    from test_fid import recipe_for
    from test_sample import run_cli, tiny_checkpoint

    a, b = make_folder(tmp_path / "a", 12, seed=1), make_folder(tmp_path / "b", 12, seed=2)
    code, _, err = run_cli(["fid", str(a), str(b), "--metrics", "fid,ppx"], capsys)
    assert code == 2 and "--metrics 'ppx': unknown metric" in err and err.count("\n") == 1
    code, _, err = run_cli(["fid", str(a), str(b), "--metrics", "pr", "--pr-features", "clip"], capsys)
    assert code == 2 and "--pr-features 'clip'" in err
    code, _, err = run_cli(["fid", str(a), str(b), "--metrics", "pr", "--weights", str(tmp_path / "none")], capsys)
    assert code == 1 and "not a directory" in err
    ck = tmp_path / "run.pt"
    tiny_checkpoint(ck, recipe=recipe_for(str(a)))
    code, _, err = run_cli(["fid", "--ckpt", str(ck), "--metrics", "pr", "--ref", "cleanfid:ffhq:256:trainval70k",
                            "--num", "12", "--workers", "0", "-q"], capsys)
    assert code == 1 and "clean-fid publishes Inception statistics only" in err


def test_a_generator_metric_is_one_registry_entry(tmp_path, G, monkeypatch):
    """How PPL plugs in: an entry with features=None, real="none", generator=True gets G and no features."""
    seen = {}

    def mean_pixel(x: registry.MetricInputs) -> dict:
        seen.update(G=x.G, gen=dict(x.gen), num=x.num, seed=x.seed)
        with torch.no_grad():
            value = float(x.G(torch.randn(x.num, x.G.z_dim, generator=torch.Generator().manual_seed(x.seed))).mean())
        return {"mean_pixel": value, "protocol": f"mean pixel of {x.num} images"}

    entry = registry.Metric("meanpix", "mean pixel", (registry.Output("mean_pixel", "higher"),), mean_pixel,
                            features=None, real="none", generator=True)
    monkeypatch.setitem(registry.METRICS, "meanpix", entry)
    r = evaluate_generator(G, None, metrics="meanpix", num=6, seed=3, progress=False)
    assert seen["G"] is G and seen["gen"] == {} and seen["num"] == 6 and seen["seed"] == 3
    assert r["metrics"] == ["meanpix"] and isinstance(r["mean_pixel"], float)
    assert r["details"]["meanpix"]["protocol"] == "mean pixel of 6 images" and r["reference"] is None
    assert registry.scalars(r, r["metrics"]) == {"mean_pixel": r["mean_pixel"]}
    a = make_folder(tmp_path / "a", 6, seed=1)
    with pytest.raises(ConfigError, match="metric 'meanpix' needs a generator"):
        evaluate_datasets(str(a), str(a), metrics="meanpix", progress=False)
