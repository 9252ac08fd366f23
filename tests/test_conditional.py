"""Class-conditional generation end to end: labelled datasets, conditional training (bit-exact resume, fake
labels from the data), sampling with --class, the conditional metric protocol, and one-line errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

from natgan import checkpoint, recipe as recipes
from natgan.cli import main
from natgan.data import labels as labelling
from natgan.data import open_dataset, prepare_dataset, prepare_digits
from natgan.data import lmdb_format as fmt
from natgan.data.sources import open_raw_source
from natgan.errors import ConfigError, DataError
from natgan.train import train
from reduced_models import REDUCED, family, reduced



def cli(capsys, args: list) -> SimpleNamespace:
    """Run ``nat-gan ARGS`` as the console script does: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return SimpleNamespace(exit_code=exc.value.code or 0, output=captured.out + captured.err, err=captured.err)


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def class_folder(tmp_path):
    """cat/0.png cat/1.png dog/0.png wild/0.png wild/1.png wild/2.png"""
    root = tmp_path / "animals"
    for cls, n in (("cat", 2), ("dog", 1), ("wild", 3)):
        for i in range(n):
            _image(root / cls / f"{i}.png", 40 * i + 10)
    return root


def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    return lines[0]


# ------------------------------------------------------------------------------------------ datasets

def test_labels_from_class_folders(class_folder):
    found = labelling.resolve(open_raw_source(class_folder), "folders")
    assert found.classes == ["cat", "dog", "wild"]
    assert found.indices.tolist() == [0, 0, 1, 2, 2, 2]
    assert labelling.resolve(open_raw_source(class_folder), "auto") is None   # no dataset.json: unlabelled


def test_dataset_json_in_a_folder_and_in_a_zip(class_folder, tmp_path):
    entries = [["cat/0.png", 4], ["cat/1.png", 0], ["dog/0.png", 4], ["wild/0.png", 1], ["wild/1.png", 2],
               ["wild/2.png", 3]]
    (class_folder / "dataset.json").write_text(json.dumps({"labels": entries}))
    found = labelling.resolve(open_raw_source(class_folder), None)
    assert found.indices.tolist() == [4, 0, 4, 1, 2, 3] and found.classes == ["0", "1", "2", "3", "4"]
    archive = tmp_path / "animals.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(class_folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(class_folder).as_posix())
    assert labelling.resolve(open_raw_source(archive), "auto").indices.tolist() == [4, 0, 4, 1, 2, 3]
    assert labelling.resolve(open_raw_source(archive), "none") is None
    (class_folder / "dataset.json").write_text(json.dumps({"labels": None}))   # the official "unlabelled"
    assert labelling.resolve(open_raw_source(class_folder), "auto") is None


def test_labels_file_csv_and_json_with_names(class_folder, tmp_path):
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("file,class\ncat/0.png,b\ncat/1.png,a\ndog/0.png,a\nwild/0.png,b\nwild/1.png,b\n"
                        "wild/2.png,a\n")
    found = labelling.resolve(open_raw_source(class_folder), str(csv_file))
    assert found.classes == ["a", "b"] and found.indices.tolist() == [1, 0, 0, 1, 1, 0]
    json_file = tmp_path / "labels.json"
    json_file.write_text(json.dumps({"cat/0.png": 2, "cat/1.png": 0, "dog/0.png": 1, "wild/0.png": 1,
                                     "wild/1.png": 0, "wild/2.png": 2}))
    assert labelling.resolve(open_raw_source(class_folder), str(json_file)).indices.tolist() == [2, 0, 1, 1, 0, 2]


@pytest.mark.parametrize("labels, message", [
    ({"labels": [["cat/0.png", 0], ["nope.png", 1]]}, "not images of the dataset, first 'nope.png'"),
    ({"labels": [["cat/0.png", 0.5]]}, "labels must be all integers or all class names"),
    ({"labels": [["cat/0.png", -1]]}, "negative"),
    ({"labels": [["cat/0.png", 0]]}, "have no label"),
    ({"labels": "x"}, "must be a list"),
])
def test_bad_dataset_json_is_one_line_and_writes_nothing(class_folder, tmp_path, labels, message, capsys):
    (class_folder / "dataset.json").write_text(json.dumps(labels))
    out = tmp_path / "out.lmdb"
    result = cli(capsys, ["prepare", "folder", str(class_folder), "--out", str(out), "--no-progress"])
    assert message in _one_line_error(result, 1)
    assert not out.exists() and not list(tmp_path.glob("out.lmdb*"))


def test_folders_labels_need_every_image_in_a_class_folder(class_folder, tmp_path, capsys):
    _image(class_folder / "loose.png", 3)
    result = cli(capsys, ["prepare", "folder", str(class_folder), "--out", str(tmp_path / "o.lmdb"),
                                 "--labels", "folders", "--no-progress"])
    assert "'loose.png'" in _one_line_error(result, 1)
    result = cli(capsys, ["prepare", "folder", str(class_folder), "--out", str(tmp_path / "o.lmdb"),
                                 "--labels", "labels.txt", "--no-progress"])
    assert "--labels labels.txt" in _one_line_error(result, 2)
    assert not (tmp_path / "o.lmdb").exists()


def test_prepare_stores_labels_check_verifies_and_summary_shows_histogram(class_folder, tmp_path, capsys):
    out = tmp_path / "animals.lmdb"
    result = cli(capsys, ["prepare", "folder", str(class_folder), "--out", str(out), "--sizes", "8",
                                 "--labels", "folders", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "3 classes from class sub-folders: cat 2, dog 1, wild 3" in result.output
    with open_dataset(out) as src:
        assert src.class_names == ["cat", "dog", "wild"] and src.labels.tolist() == [0, 0, 1, 2, 2, 2]
    checked = cli(capsys, ["prepare", "check", str(out), "--no-progress", "--workers", "0"])
    assert checked.exit_code == 0 and "cat 2, dog 1, wild 3" in checked.output, checked.output
    # a label record that no longer matches what prepare recorded is a problem `prepare check` reports
    env = lmdb.open(str(out), subdir=True)
    with env.begin(write=True) as txn:
        txn.put(labelling.LABELS_KEY, labelling.encode(np.array([0, 0, 1, 2, 2, 1])))
    env.close()
    bad = cli(capsys, ["prepare", "check", str(out), "--no-progress", "--workers", "0"])
    assert bad.exit_code == 1 and "label record hash differs" in bad.output


def test_unlabelled_datasets_carry_no_label_data(class_folder, tmp_path):
    """Without labels the LMDB holds exactly what it did before labels existed: images, length, metadata."""
    out = tmp_path / "plain.lmdb"
    result = prepare_dataset(class_folder, out, sizes=[8], workers=0, progress=False)
    assert "labels" not in result
    env = lmdb.open(str(out), readonly=True, lock=False, subdir=True)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
        meta = json.loads(txn.get(fmt.META_KEY))
    env.close()
    assert sorted(keys) == sorted([fmt.LENGTH_KEY, fmt.META_KEY] + [fmt.record_key(8, i) for i in range(6)])
    assert "labels" not in meta and "labels" not in meta["request"]
    assert open_dataset(out).labels is None


def test_digits_have_their_ten_labels(tmp_path):
    out = tmp_path / "digits.lmdb"
    result = prepare_digits(out, sizes=8, progress=False)
    assert result["labels"]["classes"] == [str(d) for d in range(10)]
    assert sum(result["labels"]["histogram"]) == 1797 and result["labels"]["histogram"][0] == 178
    src = open_dataset(out)
    from sklearn.datasets import load_digits

    assert src.labels.tolist() == load_digits().target.tolist()
    plain = prepare_digits(tmp_path / "plain.lmdb", sizes=8, progress=False, labels="none")
    assert "labels" not in plain and plain["content_hash"] == result["content_hash"]  # same images either way
    first = prepare_digits(tmp_path / "first.lmdb", sizes=8, progress=False, max_images=20)  # labels follow images
    with open_dataset(tmp_path / "first.lmdb") as part:
        assert part.labels.tolist() == load_digits().target[:20].tolist()
    assert sum(first["labels"]["histogram"]) == 20


# ------------------------------------------------------------------------------------------ training

@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    out = tmp_path_factory.mktemp("cdata") / "digits16.lmdb"
    prepare_digits(out, sizes=[16], progress=False)
    return str(out)


def _recipe(name: str, data: str, iterations: int, **train_cfg) -> recipes.Recipe:
    cfg = {"batch": 4, "iterations": iterations, "lr_decay": False, "r1_every": 2, "checkpoint_every": iterations,
           "sample_every": iterations, "log_every": 1, "bcr": True, "style_mixing": 0.5, **train_cfg}
    return recipes.from_dict({"model": {"name": name, **reduced(name, num_classes=10)},
                              "data": {"path": data, "workers": 0}, "train": cfg})


def test_conditional_resume_is_bit_exact(tmp_path, digits16):
    """Fake labels come from the checkpointed latent stream, so 2 + 2 resumed steps == 4 steps, bit for bit
    (with R1, bCR, path length, style mixing, ADA and Freeze-D all on)."""
    extra = dict(pl_weight=2.0, g_reg_every=2, augment="ada", augment_p=0.2, ada_interval=1, freeze_d=1)
    straight = tmp_path / "straight"
    train(_recipe("stylegan2", digits16, 4, **extra), straight, show_progress=False)
    split = tmp_path / "split"
    r = _recipe("stylegan2", digits16, 4, **extra)
    train(r, split, show_progress=False, max_steps=2)
    from natgan.train import resolve_run

    resolved, ck, _ = resolve_run(recipe_path=None, overrides=[], outdir=split, resume="auto")
    assert ck["progress"]["step"] == 2
    train(resolved, split, resume_from=ck, show_progress=False)
    a, b = checkpoint.load(straight / "latest.pt"), checkpoint.load(split / "latest.pt")
    assert a["extra"]["classes"] == [str(d) for d in range(10)]
    for net in ("G", "G_ema", "D"):
        for key, value in a["weights"][net].items():
            assert torch.equal(value, b["weights"][net][key]), f"{net}.{key}"


def test_fake_labels_follow_the_dataset_distribution():
    from natgan.train.rng_state import TrainerGenerators
    from natgan.train.updates import UpdateRule

    rule = UpdateRule.__new__(UpdateRule)
    rule.gens, rule.device = TrainerGenerators(0), torch.device("cpu")
    rule.label_pool = torch.tensor([0] * 900 + [1] * 100)
    rule.nets = SimpleNamespace(G=SimpleNamespace(z_dim=4))
    draws = torch.cat([rule.fake_labels(1000) for _ in range(10)])
    assert abs(float((draws == 1).float().mean()) - 0.1) < 0.02
    rule.label_pool = None
    assert rule.fake_labels(3) is None


def test_label_count_mismatch_and_unlabelled_data_are_one_line_before_anything(tmp_path, digits16, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipes.dump_toml({"model": {"name": "stylegan2", **reduced("stylegan2", num_classes=3)},
                                         "train": {"batch": 4, "iterations": 2, "lr_decay": False}}))
    out = tmp_path / "run"
    result = cli(capsys, ["train", "--recipe", str(recipe), "--data", digits16, "--outdir", str(out),
                                 "--no-progress"])
    assert "key 'model.num_classes': 3" in _one_line_error(result, 2) and not out.exists()
    plain = tmp_path / "plain.lmdb"
    prepare_digits(plain, sizes=[16], progress=False, labels="none")
    result = cli(capsys, ["train", "--recipe", str(recipe), "--data", str(plain), "--outdir", str(out),
                                 "--no-progress"])
    assert "has no class labels" in _one_line_error(result, 1) and not out.exists()


@pytest.fixture(scope="module")
def unconditional_ckpt(tmp_path_factory, digits16):
    """One step of an unconditional reduced StyleGAN2 on the (labelled) digits: labels are simply not used."""
    run = tmp_path_factory.mktemp("urun")
    r = recipes.from_dict({"model": {"name": "stylegan2", **REDUCED["stylegan2"]},
                           "data": {"path": digits16, "workers": 0},
                           "train": {"batch": 4, "iterations": 1, "checkpoint_every": 1, "sample_every": 1,
                                     "lr_decay": False}})
    train(r, run, show_progress=False)
    return run / "latest.pt"


def test_init_from_unconditional_into_conditional_is_one_line(tmp_path, digits16, unconditional_ckpt, capsys):
    recipe = tmp_path / "c.toml"
    recipe.write_text(recipes.dump_toml({"model": {"name": "stylegan2", **reduced("stylegan2", num_classes=10)},
                                         "train": {"batch": 4, "iterations": 2, "lr_decay": False}}))
    result = cli(capsys, ["train", "--recipe", str(recipe), "--data", digits16, "--outdir",
                                 str(tmp_path / "ft"), "--init", str(unconditional_ckpt)])
    assert "'model.num_classes' is 10" in _one_line_error(result, 2)
    assert not (tmp_path / "ft").exists()


# ------------------------------------------------------------------------------------------ every family

_PROJECTION = torch.randn(48, 8, generator=torch.Generator().manual_seed(0))


def tiny_features(images: torch.Tensor) -> torch.Tensor:
    """A fixed 8-d embedding of 16x16 uint8 images (offline stand-in for Inception in these tests)."""
    return torch.nn.functional.avg_pool2d(images.float() / 255, 4).flatten(1) @ _PROJECTION

@pytest.mark.parametrize("name", sorted(REDUCED))
def test_conditional_train_sample_fid_round_trip(name, tmp_path, digits16, capsys):
    """Each family: conditional training steps -> `sample --class` (one class, every class as grid rows) ->
    the conditional metric protocol (FID with dataset labels, intra-FID per class) -> `train --init` of the
    checkpoint into a new conditional run (its G and D weights imported, then one step trained on).
    Official conditional files (stylegan2-ada, stylegan3, GANformer) are imported in test_import_widths.py and
    test_import_d_architectures.py; StyleNAT, StyleSwin and HiT have no official conditional format."""
    from natgan.metrics import evaluate_generator

    hit = family(name) == "hit"
    cfg = dict(update="simultaneous", r1_every=1, ema_start=1, ema_buffers="average") if hit else {}
    run = tmp_path / "run"
    result = train(_recipe(name, digits16, 2, **cfg), run, show_progress=False)
    assert result.step == 2
    ckpt = run / "latest.pt"
    one = cli(capsys, ["sample", "--ckpt", str(ckpt), "--class", "7", "--seeds", "0-1", "--outdir",
                              str(tmp_path / "one"), "-q"])
    assert one.exit_code == 0, one.output
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["seed0000.png", "seed0001.png"]
    grid = cli(capsys, ["sample", "--ckpt", str(ckpt), "--class", "all", "--grid", "3x10", "--outdir",
                               str(tmp_path / "grid"), "-q", "--trunc", "0.7"])
    assert grid.exit_code == 0, grid.output
    assert Image.open(tmp_path / "grid" / "grid.png").size == (3 * 16, 10 * 16)

    G = checkpoint.build_generator(checkpoint.load(ckpt))
    out = evaluate_generator(G, digits16, metrics=["fid", "intra_fid"], num=20, extractor=tiny_features,
                             progress=False,
                             batch_size=8, use_cache=False, workers=0)
    assert np.isfinite(out["fid"]) and np.isfinite(out["intra_fid"])
    per = out["details"]["intra_fid"]["per_class"]
    assert list(per) == [str(d) for d in range(10)] and out["intra_fid"] == pytest.approx(np.mean(list(per.values())))
    assert "labels follow" in out["generated"]["labels"]

    recipe = tmp_path / "ft.toml"
    recipe.write_text(recipes.dump_toml({"model": {"name": name, **reduced(name, num_classes=10)},
                                         "train": {"batch": 4, "iterations": 1, "lr_decay": False, "seed": 1, **cfg}}))
    ft = cli(capsys, ["train", "--recipe", str(recipe), "--data", digits16, "--outdir", str(tmp_path / "ft"),
                      "--init", str(ckpt), "--no-progress"])
    assert ft.exit_code == 0, ft.output
    source, tuned = checkpoint.load(ckpt), checkpoint.load(tmp_path / "ft" / "latest.pt")
    assert tuned["progress"]["step"] == 1 and tuned["extra"]["classes"] == source["extra"]["classes"]
    for net in ("G", "D"):  # one small Adam step away from the source, not a fresh (seed 1) initialisation
        moved = [(v.float() - source["weights"][net][k].float()).abs().max().item()
                 for k, v in tuned["weights"][net].items()
                 if v.is_floating_point() and not k.endswith(("weight_u", "weight_v"))]  # spectral norm's u, v
        assert max(moved) > 0 and max(moved) < 0.05, (net, max(moved))


# ------------------------------------------------------------------------------------------ sampling

@pytest.fixture(scope="module")
def conditional_ckpt(tmp_path_factory, digits16):
    run = tmp_path_factory.mktemp("crun")
    train(_recipe("stylegan2", digits16, 1), run, show_progress=False)
    return run / "latest.pt"


def test_class_names_and_rows(conditional_ckpt, tmp_path):
    from natgan.sampling import class_grid, fixed_class, load_generator, seed_grid

    loaded = load_generator(conditional_ckpt)
    G = loaded.G
    assert loaded.chosen_classes("3,all".split(",")[0]) == [3] and loaded.chosen_classes("all") == list(range(10))
    grid = class_grid(G, [0, 1], [2, 5])
    np.testing.assert_array_equal(grid[:16], seed_grid(G, [0, 1], 2, 1, labels=fixed_class(2)))
    np.testing.assert_array_equal(grid[16:], seed_grid(G, [0, 1], 2, 1, labels=fixed_class(5)))
    assert not np.array_equal(grid[:16], grid[16:])


def test_per_class_truncation_centre(conditional_ckpt):
    """psi = 0 puts every image of a class on that class's mean w (StyleGAN-XL's per-class centre)."""
    from natgan.models.conditioning import ClassBoundGenerator
    from natgan.sampling import ImageGenerator, compute_w_avg, fixed_class

    G = checkpoint.build_generator(checkpoint.load(conditional_ckpt)).eval()
    G.noise_mode = "const"
    centre = compute_w_avg(G, c=4, num=500)
    bound = ClassBoundGenerator(G, 4)
    torch.testing.assert_close(compute_w_avg(bound, num=500), centre)
    gen = ImageGenerator(G, psi=0.0, labels=fixed_class(4))
    gen._class_centres[4] = centre
    images = gen.images([0, 1])
    assert torch.equal(images[0], images[1])
    with pytest.raises(ValueError, match="pass c"):
        compute_w_avg(G)


@pytest.mark.parametrize("args, code, message", [
    (["--class", "cat"], 2, "'cat': not a class of this checkpoint (10 classes: 0, 1, 2"),
    (["--class", "10"], 2, "'10': not a class"),
    ([], 2, "class-conditional (10 classes"),
    (["--class", "all", "--grid", "2x3"], 2, "needs 10 rows"),
    (["--class", "1,2", "--style-mix", "0", "--with", "1", "--layers", "0-1"], 2, "one class at a time"),
])
def test_sample_class_errors(conditional_ckpt, tmp_path, args, code, message, capsys):
    out = tmp_path / "out"
    result = cli(capsys, ["sample", "--ckpt", str(conditional_ckpt), "--outdir", str(out), "-q", *args])
    assert message in _one_line_error(result, code)
    assert not out.exists() or not any(out.iterdir())


def test_class_on_an_unconditional_checkpoint_is_one_line(tmp_path, unconditional_ckpt, capsys):
    for cmd in (["sample"], ["visualize"]):
        result = cli(capsys, [*cmd, "--ckpt", str(unconditional_ckpt), "--class", "3",
                                     "--outdir", str(tmp_path / "o")])
        assert "unconditional" in _one_line_error(result, 2)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_latent_tools_work_in_one_class(conditional_ckpt, tmp_path, capsys):
    mix = cli(capsys, ["sample", "--ckpt", str(conditional_ckpt), "--class", "2", "--style-mix", "0,1",
                              "--with", "2", "--layers", "0-2", "--outdir", str(tmp_path / "mix"), "-q"])
    assert mix.exit_code == 0, mix.output
    walk = cli(capsys, ["sample", "--ckpt", str(conditional_ckpt), "--class", "2", "--interpolate", "0,1",
                               "--frames", "3", "--outdir", str(tmp_path / "walk"), "-q"])
    assert walk.exit_code == 0, walk.output
    dirs = cli(capsys, ["directions", "--ckpt", str(conditional_ckpt), "--out", str(tmp_path / "d.npz")])
    assert dirs.exit_code == 0, dirs.output


def test_metric_on_a_conditional_model_needs_labelled_reference(conditional_ckpt, tmp_path):
    from natgan.metrics import evaluate_generator

    plain = tmp_path / "plain.lmdb"
    prepare_digits(plain, sizes=[16], progress=False, labels="none")
    G = checkpoint.build_generator(checkpoint.load(conditional_ckpt))
    with pytest.raises(DataError, match="has no class labels"):
        evaluate_generator(G, str(plain), num=4, extractor=tiny_features, progress=False)
    with pytest.raises(ConfigError, match="labelled dataset"):
        evaluate_generator(G, "cleanfid:ffhq:256:trainval70k", num=4, extractor=tiny_features, progress=False)
