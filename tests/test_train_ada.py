"""D augmentation, --init and Freeze-D in the real training loop (tiny model; real families for Freeze-D)."""

import pytest
import torch

import tiny_model  # noqa: F401
from natgan import checkpoint
from natgan.errors import ConfigError
from natgan.models import create
from natgan.train import resolve_init, train
from natgan.train.freeze import frozen_parameters, module_levels
from natgan.train.trainer import Trainer
from test_cli import run as cli
from test_train import digits, run, state_tensors, tiny_recipe  # noqa: F401
from test_train_models import REDUCED

ADA = dict(augment="ada", augment_p=0.3, ada_interval=2, ada_kimg=0.02, r1_every=2, bcr=True)


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_resume_with_ada_is_bit_identical(tmp_path, digits, update):  # noqa: F811
    recipe_path = tiny_recipe(tmp_path, digits, update=update, style_mixing=0.0, **ADA)
    run(recipe_path, tmp_path / "straight")
    run(recipe_path, tmp_path / "split", max_steps=3)  # stops between two p adjustments
    run(None, tmp_path / "split", resume="auto")
    a, b = (checkpoint.load(tmp_path / d / "latest.pt") for d in ("straight", "split"))
    for key, value in state_tensors(a).items():
        assert torch.equal(value, state_tensors(b)[key]), key
    aug_a, aug_b = a["extra"]["augment"], b["extra"]["augment"]
    assert aug_a["kind"] == "ada" and aug_a.keys() == aug_b.keys()
    for key in aug_a:
        same = torch.equal(aug_a[key], aug_b[key]) if torch.is_tensor(aug_a[key]) else aug_a[key] == aug_b[key]
        assert same, key
    assert aug_a["p"] != 0.3  # p really moved (by 4 * 2 / 20 = 0.4 per adjustment)
    log = (tmp_path / "straight" / "log.txt").read_text()
    assert " p " in log and " rt " in log


def test_augmentation_reaches_every_d_input(tmp_path, digits):  # noqa: F811
    """With ADA at p = 1 D never sees an un-augmented image: reals, fakes, R1 reals and both bCR sides."""
    from natgan.augment import DAugment

    t = Trainer(resolve_init_free(tmp_path, digits, augment="fixed", augment_p=1.0, augment_pipe="color",
                                  r1_every=1, bcr=True), tmp_path / "run", show_progress=False)
    seen, calls, inner = [], [], t.daug
    t.D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))

    class Spy(DAugment):
        def __call__(self, x):
            calls.append(x.detach().clone())
            return inner(x)

    t.update.daug = Spy()
    t.update.step(iter([torch.rand(4, 3, 8, 8) * 2 - 1 for _ in range(2)]), 0)
    # D step: fake, real, bCR fake, bCR real; R1: real; G step: fake
    assert len(calls) == len(seen) == 6
    for x, d_in in zip(calls, seen):
        assert not torch.equal(x, d_in)


def resolve_init_free(tmp_path, digits, **settings):  # noqa: F811
    from natgan import recipe as recipes

    return recipes.load(tiny_recipe(tmp_path, digits, **settings))


def test_init_copies_weights_and_resets_everything_else(tmp_path, digits):  # noqa: F811
    source = tmp_path / "source"
    run(tiny_recipe(tmp_path, digits, **ADA), source)
    ck = checkpoint.load(source / "latest.pt")
    new_recipe = tiny_recipe(tmp_path, digits, iterations=3, lr_decay=False, d_lr=0.001, beta2=0.9, seed=11)
    recipe, init_ck, how = resolve_init(recipe_path=new_recipe, overrides=[], outdir=tmp_path / "new",
                                        init=str(source / "latest.pt"), data_override=[])
    assert "new run" in how and recipe.train.iterations == 3
    t = Trainer(recipe, tmp_path / "new", init_from=init_ck, show_progress=False)
    for name, module in (("G", t.G), ("G_ema", t.G_ema), ("D", t.D)):
        for k, v in module.state_dict().items():
            assert torch.equal(v, ck["weights"][name][k]), (name, k)
    assert t.step == 0 and t.images_seen == 0 and t.metrics == []
    assert t.g_opt.state_dict()["state"] == {} and t.d_opt.state_dict()["state"] == {}
    assert t.daug.stats() == {}  # the new recipe has no augmentation; the old p does not leak in
    # with --init-optim the Adam moments come along, the new recipe's hyper-parameters stay
    t2 = Trainer(recipe, tmp_path / "new2", init_from=init_ck, init_optim=True, show_progress=False)
    moments = t2.d_opt.state_dict()
    for idx, state in ck["optim"]["D"]["state"].items():
        assert torch.equal(moments["state"][idx]["exp_avg"], state["exp_avg"])
    fresh = t.d_opt.param_groups[0]
    assert moments["param_groups"][0]["betas"] == fresh["betas"] != tuple(ck["optim"]["D"]["param_groups"][0]["betas"])
    # and training from there works and starts at step 0
    result = train(recipe, tmp_path / "new3", init_from=init_ck, show_progress=False)
    assert result.step == 3 and checkpoint.load(tmp_path / "new3" / "latest.pt")["progress"]["step"] == 3


def test_init_refuses_a_conflicting_model(tmp_path, digits, capsys):  # noqa: F811
    source = tmp_path / "source"
    run(tiny_recipe(tmp_path, digits, iterations=2, lr_decay=False), source)
    other = tmp_path / "other.toml"
    other.write_text(tiny_recipe(tmp_path, digits).read_text().replace("resolution = 8", "resolution = 8\nwidth = 32"))
    with pytest.raises(ConfigError, match=r"\[model\] differs from the --init checkpoint .*model.width"):
        resolve_init(recipe_path=other, overrides=[], outdir=tmp_path / "x", init=str(source / "latest.pt"),
                     data_override=[])
    with pytest.raises(ConfigError, match="model"):
        resolve_init(recipe_path=other, overrides=["model.width=4"], outdir=tmp_path / "x",
                     init=str(source / "latest.pt"), data_override=[])
    # a recipe without [model] takes the checkpoint's
    bare = tmp_path / "bare.toml"
    model_section = '[model]\nname = "_tiny_test"\nresolution = 8\n'
    bare.write_text(tiny_recipe(tmp_path, digits).read_text().replace(model_section, ""))
    recipe, _, _ = resolve_init(recipe_path=bare, overrides=[], outdir=tmp_path / "x",
                                init=str(source / "latest.pt"), data_override=[])
    assert recipe.model_name == "_tiny_test"
    # on the command line: one line, exit 2, and --init with --resume is refused
    code, _, err = cli(capsys, "train", "--recipe", str(other), "--init", str(source / "latest.pt"),
                       "--outdir", str(tmp_path / "cli"))
    assert code == 2 and "differs from the --init checkpoint" in err and "Traceback" not in err
    code, _, err = cli(capsys, "train", "--recipe", str(bare), "--init", str(source / "latest.pt"),
                       "--resume", "auto", "--outdir", str(tmp_path / "cli"))
    assert code == 2 and "only one" in err


@pytest.mark.parametrize("family", list(REDUCED))
def test_freeze_d_levels_for_every_family(family):
    D = create(family, **REDUCED[family]).discriminator
    levels = module_levels(D, 16)
    assert max(levels.values()) >= 1
    frozen = frozen_parameters(D, 16, 1)
    params = list(D.parameters())
    assert 0 < len(frozen) < len(params)
    # level 0 holds the layers that see the input image first
    first = next(p for n, p in D.named_parameters())
    assert id(first) in frozen
    with pytest.raises(ConfigError, match="train.freeze_d"):
        frozen_parameters(D, 16, 99)


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_frozen_d_parameters_stay_bitwise_unchanged(tmp_path, update):
    from natgan.data import prepare_digits

    data = tmp_path / "d16.lmdb"
    prepare_digits(data, sizes=[16], progress=False)
    cfg = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in REDUCED["stylegan2"].items())
    text = (f"[model]\nname = \"stylegan2\"\n{cfg}[data]\npath = \"{data}\"\nworkers = 0\n[train]\nbatch = 4\n"
            f"iterations = 3\nlr_decay = false\nr1_every = 1\nfreeze_d = 1\nupdate = \"{update}\"\nseed = 1\n"
            f"style_mixing = 0.0\nbcr = false\ncheckpoint_every = 3\n")
    recipe_path = tmp_path / "sg2.toml"
    recipe_path.write_text(text)
    from natgan import recipe as recipes

    t = Trainer(recipes.load(recipe_path), tmp_path / "run", show_progress=False)
    before = {n: p.detach().clone() for n, p in t.D.named_parameters()}
    frozen_names = {n for n, p in t.D.named_parameters() if id(p) in t.update.d_frozen}
    assert frozen_names and any(n.startswith("convs.0") for n in frozen_names)
    t.run()
    changed = {n for n, p in t.D.named_parameters() if not torch.equal(p, before[n])}
    assert changed and not changed & frozen_names
    assert changed == set(before) - frozen_names
    # G still learned through the frozen layers
    assert t.step == 3


def test_small_dataset_recipe_is_the_official_architecture_with_ada():
    """So `--init` from the imported official FFHQ-256 StyleNAT fits it without any --set model.*."""
    from natgan import recipe as recipes

    small, ffhq = recipes.load("recipes/stylenat_small_ada.toml"), recipes.load("recipes/ffhq256.toml")
    assert small.to_dict()["model"] == ffhq.to_dict()["model"]
    assert (small.train.augment, small.train.augment_pipe, small.train.ada_target, small.train.ada_kimg) == \
        ("ada", "bgc", 0.6, 500.0)
