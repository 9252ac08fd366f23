"""The conditional paths of the metric registry: PPL's labels (stylegan2-ada-pytorch's conditional protocol,
re-derived here), intra-FID's cached per-class reference statistics, and the labels every other metric's
generated images get. Offline: random-weight LPIPS and small fixed feature maps stand in for the networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from natgan.data import open_dataset, prepare_digits
from natgan.metrics import evaluate_generator
from natgan.metrics import ppl
from natgan.metrics.lpips import load_lpips
from natgan.models import create
from natgan.models.conditioning import ClassBoundGenerator
from natgan.models.contract import has_mapping_network, noise_inputs, using_noise
from natgan.models.interpolation import slerp
from natgan.models.normalization import to_unit
from reduced_models import reduced
from test_fid import CountingExtractor, TinyFeatures, _isolated_cache  # noqa: F401 (autouse: a private cache)

K = 3  # classes of the generators built here


@pytest.fixture(scope="module")
def lpips():
    return load_lpips(random_init=True)


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmdata") / "digits16.lmdb"
    prepare_digits(out, sizes=[16], progress=False)
    return str(out)


def conditional(name: str, num_classes: int = K) -> torch.nn.Module:
    """A reduced class-conditional generator whose label matters visibly (StyleGAN2's noise made to count too)."""
    torch.manual_seed(0)
    G = create(name, **reduced(name, num_classes)).generator.eval()
    with torch.no_grad():
        for n, p in G.named_parameters():
            if "noise" in n and name == "stylegan2":  # noise strengths start at zero
                p.fill_(0.3)
            if "label_embed" in n and p.ndim == 2:  # make the label's share of w large
                p.mul_(4)
    return G


class MappingSpy:
    """Records the (z, c) of every ``G.mapping`` call."""

    def __init__(self, G):
        self.calls = []
        self.original = G.mapping

        def spy(z, c=None):
            self.calls.append((z.detach().clone(), None if c is None else c.detach().clone()))
            return self.original(z, c)

        G.mapping = spy


# ------------------------------------------------------------------------------------------------ PPL


def official_ppl(G, lpips, *, n: int, seed: int, pool: torch.Tensor, epsilon: float = 1e-4) -> float:
    """stylegan2-ada-pytorch's ``PPLSampler.forward`` (metrics/perceptual_path_length.py), re-derived for one
    batch of ``n`` paths: a label per path from the dataset (``dataset.get_label(randint(len))``), the same c
    for both ends (``mapping(z=cat([z0, z1]), c=cat([c, c]))`` in w; ``mapping(cat([zt0, zt1]), cat([c, c]))``
    in z), noise shared by the pair, ``dist = lpips(t) - lpips(t + eps)`` / eps², 1/99 percentile filter.
    The draws (t, z, noise, then the label indices) come from nat-gan's documented seeded stream."""
    rng = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=rng) * 0.0  # sampling "end"
    z0, z1 = torch.randn(2 * n, G.z_dim, generator=rng).chunk(2)
    noise = {k: torch.randn(v.shape, generator=rng) for k, v in noise_inputs(G).items()}
    c = pool[torch.randint(len(pool), (n,), generator=rng)]
    with torch.no_grad(), using_noise(G, noise):
        G.noise_mode = "const"
        if has_mapping_network(G):
            w0, w1 = G.mapping(torch.cat([z0, z1]), torch.cat([c, c])).chunk(2)
            shape = (-1, *([1] * (w0.ndim - 1)))
            wt0, wt1 = w0.lerp(w1, t.view(shape)), w0.lerp(w1, t.view(shape) + epsilon)
        else:
            zt0, zt1 = slerp(z0, z1, t), slerp(z0, z1, t + epsilon)
            wt0, wt1 = G.mapping(torch.cat([zt0, zt1]), torch.cat([c, c])).chunk(2)
        img = to_unit(G.synthesis(torch.cat([wt0, wt1])).float(), G.normalization, clamp=False)
        a, b = img.chunk(2)
        dist = (lpips(a, b) / epsilon ** 2).double().numpy()
    lo, hi = np.percentile(dist, 1, method="lower"), np.percentile(dist, 99, method="higher")
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


@pytest.mark.parametrize("name", ["stylegan2", "hit"])
def test_conditional_ppl_is_stylegan2_ada_pytorchs_protocol(name, lpips):
    """PPL of a conditional G equals the official conditional sampler re-derived on the same draws (w lerp for
    StyleGAN2, z slerp for HiT, as their unconditional forms); a run whose labels were ignored, drawn
    elsewhere or different at the two ends of a path would not."""
    G = conditional(name)
    pool = torch.tensor([2, 0, 2, 1, 2, 2])
    ours = ppl.perceptual_path_length(G, lpips, n=6, batch=6, seed=3, label_pool=pool)
    assert ours["protocol"]["space"] == ("w" if name == "stylegan2" else "z")
    expected = official_ppl(G, lpips, n=6, seed=3, pool=pool)
    assert ours["ppl"] == pytest.approx(expected, rel=1e-5)
    # the label matters here, so a wrong label would show: every path in class 0 vs every path in class 1
    only0 = ppl.perceptual_path_length(G, lpips, n=6, batch=6, seed=3, label_pool=torch.tensor([0]))["ppl"]
    only1 = ppl.perceptual_path_length(G, lpips, n=6, batch=6, seed=3, label_pool=torch.tensor([1]))["ppl"]
    assert only0 != pytest.approx(only1, rel=1e-3)
    assert only0 == pytest.approx(official_ppl(G, lpips, n=6, seed=3, pool=torch.tensor([0])), rel=1e-5)


def test_conditional_ppl_in_one_class_is_the_class_bound_generators(lpips):
    """With every dataset label k, a conditional G's PPL is that of G bound to class k (the unconditional
    path of that class's generator) on the same seed: the label reaches both ends of every path."""
    G = conditional("stylegan2")
    for k in range(K):
        cond = ppl.perceptual_path_length(G, lpips, n=4, batch=4, seed=1, label_pool=torch.tensor([k, k]))
        bound = ppl.perceptual_path_length(ClassBoundGenerator(G, k), lpips, n=4, batch=4, seed=1)
        assert cond["ppl"] == pytest.approx(bound["ppl"], rel=1e-6)


@pytest.mark.parametrize("name", ["stylegan2", "hit"])
def test_conditional_ppl_draws_one_dataset_label_per_path_for_both_ends(name, lpips):
    """Every mapping call gets labels; the two ends of a path share one label; labels come only from the pool
    (the dataset's labels: class 1 never occurs there) and follow it over several batches."""
    G = conditional(name)
    spy = MappingSpy(G)
    pool = torch.tensor([0, 2, 2, 2])
    ppl.perceptual_path_length(G, lpips, n=20, batch=4, seed=0, label_pool=pool)
    calls = [(z, c) for z, c in spy.calls if len(z) == 8]  # the path calls (the space probe is 2 latents)
    assert len(calls) == 5 and all(c is not None and len(c) == len(z) for z, c in calls)
    labels = torch.cat([c[:4] for _, c in calls])
    for _, c in calls:
        assert torch.equal(c[:4], c[4:])  # path i's two ends: one label
    assert set(labels.tolist()) == {0, 2}
    assert 5 <= int((labels == 2).sum()) < 20  # the pool's 3:1 share, seeded (15 of 20 here)


def test_conditional_ppl_through_the_runner_uses_the_reference_labels(lpips, digits16):
    """`nat-gan fid --metrics ppl` on a conditional checkpoint: labels from the labelled reference dataset (it
    failed before: the probe of the mapping network called G without labels)."""
    G = conditional("stylegan2", num_classes=10)
    out = evaluate_generator(G, digits16, metrics=["ppl"], num=6, batch_size=8, seed=2, progress=False,
                             options={"lpips": lpips}, workers=0)
    src = open_dataset(digits16, 16)
    try:
        pool = torch.as_tensor(np.asarray(src.labels), dtype=torch.long)
    finally:
        src.close()
    direct = ppl.perceptual_path_length(G, lpips, n=6, batch=4, seed=2, label_pool=pool)
    assert out["ppl"] == direct["ppl"]
    assert "labels drawn from the dataset per path" in out["details"]["ppl"]["protocol"]


# ------------------------------------------------------------------------------------ intra-FID's cache

PER_CLASS_REAL = 5


def labelled_folder(root, labels: list[int], *, seed: int = 0):
    """16-px PNGs with a stylegan2-ada dataset.json giving image i the class labels[i]."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(len(labels)):
        base = rng.integers(0, 256, size=(1, 1, 3))
        noise = rng.integers(-60, 60, size=(16, 16, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(root / f"{i:04d}.png")
    write_labels(root, labels)
    return root


def write_labels(root, labels: list[int]) -> None:
    import json

    (root / "dataset.json").write_text(json.dumps({"labels": [[f"{i:04d}.png", c] for i, c in enumerate(labels)]}))


def extractor(*, mode: str = "legacy_pytorch", name: str = "tiny-inception", weights_id: str = "w1"):
    ext = CountingExtractor(TinyFeatures().eval(), mode=mode, name=name)
    ext.weights_id = weights_id
    return ext


def intra(G, ref, ext, **kw):
    out = evaluate_generator(G, str(ref), metrics=["intra_fid"], num=3 * K, extractor=ext, progress=False,
                             batch_size=4, workers=0, mode=ext.mode, **kw)
    return out, out["details"]["intra_fid"]


GENERATED = 3 * K  # generated images each intra-FID run below embeds: 3 per class (no shared set is made for it)
LABELS = [k for k in range(K) for _ in range(PER_CLASS_REAL)]


@pytest.fixture
def cond_G():
    return conditional("stylegan2")


def test_intra_fid_reuses_its_per_class_reference_statistics(tmp_path, cond_G):
    """The second run reads every class's real statistics from the cache: the extractor embeds only the
    generated images, and every number is the same."""
    ref = labelled_folder(tmp_path / "ref", LABELS)
    ext = extractor()
    first, d1 = intra(cond_G, ref, ext)
    assert ext.images == GENERATED + len(LABELS)
    assert d1["reference_cache"]["stored"] == K and d1["reference_cache"]["cached"] == 0
    entries = sorted((tmp_path / "cache" / "fid-stats").glob("*.npz"))
    assert len(entries) == K
    ext.images = 0
    second, d2 = intra(cond_G, ref, ext)
    assert ext.images == GENERATED  # no real image embedded again
    assert d2["reference_cache"] == {**d2["reference_cache"], "cached": K, "stored": 0}
    assert second["intra_fid"] == first["intra_fid"] and d2["per_class"] == d1["per_class"]
    assert d2["real_per_class"] == {str(k): PER_CLASS_REAL for k in range(K)}
    # a FID on the whole dataset keys its entry apart from the classes' (subset "all", 15 images)
    from natgan.metrics.cache import StatsCache

    subsets = sorted(e.key["subset"] for e in StatsCache().entries())
    assert [s.split(",")[0] for s in subsets] == [f"class {k} ({k})" for k in range(K)]


def test_cache_list_shows_which_class_an_entry_holds(tmp_path, cond_G, capsys, monkeypatch):
    from natgan.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    intra(cond_G, labelled_folder(tmp_path / "ref", LABELS), extractor())
    with pytest.raises(SystemExit) as exc:
        main(["cache", "list"])
    out = capsys.readouterr().out
    assert (exc.value.code or 0) == 0 and "subset" in out
    assert all(f"class {k} ({k}), images " in out for k in range(K))


@pytest.mark.parametrize("change", ["images", "labels", "weights", "mode", "extractor"])
def test_intra_fid_cache_misses_when_a_key_part_changes(tmp_path, cond_G, change):
    """Each part of the key misses on its own: the dataset's content (the images rewritten), the class's members
    (two images swap classes: only those two classes miss, though their counts stay), the extractor's weights
    digest, the mode (resizing protocol) and the extractor."""
    ref = labelled_folder(tmp_path / "ref", LABELS)
    intra(cond_G, ref, extractor())
    kw = {}
    missed = K
    if change == "images":
        labelled_folder(ref, LABELS, seed=1)  # same names and labels, other pixels
    elif change == "labels":
        swapped = list(LABELS)
        swapped[0], swapped[PER_CLASS_REAL] = 1, 0  # images 0 and 5 swap classes 0 and 1: same counts, same images
        write_labels(ref, swapped)
        missed = 2
    elif change == "weights":
        kw["weights_id"] = "w2"
    elif change == "mode":
        kw["mode"] = "clean"
    else:
        kw["name"] = "other-net"
    ext = extractor(**kw)
    _, d = intra(cond_G, ref, ext)
    assert d["reference_cache"]["cached"] == K - missed and d["reference_cache"]["stored"] == missed
    assert ext.images == GENERATED + (2 * PER_CLASS_REAL if change == "labels" else len(LABELS))


def test_intra_fid_cache_policy(tmp_path, cond_G, monkeypatch):
    """--no-cache reads and writes nothing; classes under the shipped 1,000-image threshold are recomputed, as
    small FID references are; classes whose entries would not fit under the cap together are not stored
    (least-recently-used eviction would thrash); each case says why in the report."""
    from natgan.metrics import cache as cache_mod

    ref = labelled_folder(tmp_path / "ref", LABELS)
    stats_dir = tmp_path / "cache" / "fid-stats"
    _, d = intra(cond_G, ref, extractor(), use_cache=False)
    assert not list(stats_dir.glob("*.npz")) and "cache not used (--no-cache)" in d["reference_cache"]["notes"]
    monkeypatch.setattr(cache_mod, "MIN_CACHED_IMAGES", 1000)
    _, d = intra(cond_G, ref, extractor())
    assert not list(stats_dir.glob("*.npz")) and d["reference_cache"]["recomputed_small"] == K
    assert f"{K} of {K} classes have fewer than 1,000 real images" in d["reference_cache"]["notes"][0]
    monkeypatch.setattr(cache_mod, "MIN_CACHED_IMAGES", 1)
    entry = 8 * 4 + 8 * 8 * 8  # one class: the float32 mean and float64 covariance of 8 features
    monkeypatch.setenv("NATGAN_CACHE_MAX_MB", str((K * entry - 1) / 2**20))  # room for K - 1 entries only
    _, d = intra(cond_G, ref, extractor())
    assert not list(stats_dir.glob("*.npz")) and d["reference_cache"]["stored"] == 0
    assert f"not stored: {K} classes x" in d["reference_cache"]["notes"][0]
    monkeypatch.setenv("NATGAN_CACHE_MAX_MB", str(2 * K * entry / 2**20 + 1))
    _, d = intra(cond_G, ref, extractor())
    assert len(list(stats_dir.glob("*.npz"))) == K and d["reference_cache"]["notes"] == []


def test_fid_summary_reports_the_per_class_cache(tmp_path, cond_G, capsys, monkeypatch):
    """`nat-gan fid`'s table: the per-class line as before, then what the cache gave and stored."""
    from natgan.cli.fid import _summary

    monkeypatch.setenv("COLUMNS", "300")
    ref = labelled_folder(tmp_path / "ref", LABELS)
    first, _ = intra(cond_G, ref, extractor())
    _summary(first, None)
    out = capsys.readouterr().out
    assert "  per class  0 " in out and f"MB of per-class statistics ({K} of {K} classes); the cache holds" in out
    second, _ = intra(cond_G, ref, extractor())
    _summary(second, None)
    out = capsys.readouterr().out
    assert f"real statistics of {K} of {K} classes from the cache" in out and "MB of per-class" not in out


# ------------------------------------------------------------------------ every registry metric, conditional


def test_every_registry_metric_scores_a_conditional_generator(digits16, lpips):
    """fid, kid, pr, dc and is read one shared set of generated images: image i has the label of a digits image
    drawn with seed i (stylegan2-ada's conditional protocol); ppl and intra_fid run in the same evaluation."""
    from natgan.metrics import FeatureExtractor
    from natgan.metrics.registry import METRICS
    from natgan.sampling.classes import dataset_labels

    G = conditional("stylegan2", num_classes=10)
    seen = []
    G.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[1] if len(args) > 1 else kwargs.get("c")),
                                with_kwargs=True)
    logits = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    # legacy_tensorflow: the network gets the 16-px images as they are (no 299-px resize), so this stays fast
    ext = FeatureExtractor(TinyFeatures().eval(), mode="legacy_tensorflow", name=None, logits_weight=logits)
    num, seed = 12, 4
    out = evaluate_generator(G, digits16, metrics=list(METRICS), num=num, seed=seed, batch_size=8, extractor=ext,
                             pr_features="inception", progress=False, workers=0, options={"lpips": lpips})
    src = open_dataset(digits16, 16)
    try:
        pool = torch.as_tensor(np.asarray(src.labels), dtype=torch.long)
    finally:
        src.close()
    shared = torch.cat([c.cpu() for c in seen[:2]])  # the first generation: the shared set, in batches of 8
    assert torch.equal(shared, dataset_labels(pool)(range(seed, seed + num)))
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "is", "ppl", "intra_fid"):
        assert np.isfinite(out[key]), key
    assert "labels follow" in out["generated"]["labels"]


def test_intra_fid_generates_as_the_shared_set_does(tmp_path, cond_G):
    """intra-FID's per-class images are made like the shared generated set: G in eval mode with the metric noise
    mode (random noise, the published protocol), and the caller's global random stream left where it was (the
    trainer scores with it running)."""
    ref = labelled_folder(tmp_path / "ref", LABELS)
    G = cond_G.train()
    G.noise_mode = "const"
    seen = []
    G.register_forward_pre_hook(lambda m, args: seen.append((m.training, m.noise_mode)))
    ext = extractor()  # built first: its layers' initialisation draws from the global stream
    torch.manual_seed(123)
    before = torch.get_rng_state()
    intra(G, ref, ext)
    assert len(seen) == K and set(seen) == {(False, "random")}  # one batch per class
    assert torch.equal(torch.get_rng_state(), before)
    assert G.training and G.noise_mode == "const"


def test_periodic_conditional_metrics_in_training_leave_training_unchanged(tmp_path, digits16):
    """`eval.every` with fid and intra_fid on a conditional run: both are logged at each evaluation (labels from
    the training data), and the weights after 4 steps are bit for bit those of the same run without evaluations
    (the metrics' generation and scoring leave the trainer's random streams and G_ema's mode alone)."""
    from natgan import checkpoint
    from natgan import recipe as recipes
    from natgan.train import train

    def run(out, **ev):
        recipe = recipes.from_dict({
            "model": {"name": "stylegan2", **reduced("stylegan2", 10)},
            "data": {"path": digits16, "workers": 0},
            "train": {"batch": 4, "iterations": 4, "lr_decay": False, "r1_every": 2, "checkpoint_every": 4,
                      "sample_every": 4, "log_every": 1},
            "eval": {"every": 0, **ev}})
        return train(recipe, out, show_progress=False, fid_extractor=lambda images: images.float().mean(dim=(2, 3)))

    evaluated = run(tmp_path / "eval", every=2, num=20, batch=8, metrics=["fid", "intra_fid"])
    assert [m["step"] for m in evaluated.metrics] == [2, 4]
    assert all(np.isfinite(m["fid"]) and np.isfinite(m["intra_fid"]) for m in evaluated.metrics)
    assert "labels follow" in evaluated.metrics[0]["generated"]["labels"]
    run(tmp_path / "plain")
    a, b = checkpoint.load(tmp_path / "eval" / "latest.pt"), checkpoint.load(tmp_path / "plain" / "latest.pt")
    for net in ("G", "G_ema", "D"):
        for key, value in a["weights"][net].items():
            assert torch.equal(value, b["weights"][net][key]), f"{net}.{key}"


def test_intra_fid_on_an_unconditional_model_is_refused_before_any_work(tmp_path, digits16):
    """One line naming the metric, before any reference or generated image is embedded; a recipe that would run
    it every eval.every steps is refused when it is read, not at the first evaluation hours later."""
    from natgan import recipe as recipes
    from natgan.errors import ConfigError

    ext = extractor()
    G = create("stylegan2", **reduced("stylegan2")).generator.eval()
    with pytest.raises(ConfigError, match="metric 'intra_fid' needs a class-conditional generator"):
        evaluate_generator(G, digits16, metrics=["fid", "intra_fid"], num=4, extractor=ext, progress=False,
                           workers=0, mode=ext.mode)
    assert ext.images == 0
    data = {"model": {"name": "stylegan2", **reduced("stylegan2")}, "data": {"path": digits16},
            "eval": {"every": 100, "metrics": ["fid", "intra_fid"]}}
    with pytest.raises(ConfigError, match="key 'eval.metrics': metric 'intra_fid' needs a class-conditional"):
        recipes.from_dict(data)
    recipes.from_dict({**data, "model": {"name": "stylegan2", **reduced("stylegan2", 10)}})  # conditional: fine
