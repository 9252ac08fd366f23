"""D augmentation, --init and Freeze-D in the real training loop (tiny model; real families for Freeze-D)."""

import pytest
import torch

import tiny_model  # noqa: F401
from natgan import checkpoint, recipe as recipes
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

    observed = []

    class Spy(DAugment):
        def __call__(self, x):
            calls.append(x.detach().clone())
            return inner(x)

        def observe(self, logits):
            observed.append(logits.detach().clone())

    t.update.daug = Spy()
    t.update.step(iter([torch.rand(4, 3, 8, 8) * 2 - 1 for _ in range(2)]), 0)
    # D step: fake, real, bCR fake, bCR real; R1: real; G step: fake
    assert len(calls) == len(seen) == 6
    for x, d_in in zip(calls, seen):
        assert not torch.equal(x, d_in)
    # r_t counts the real logits of the D step and of the lazy R1 pass (official loss.py reports both phases)
    assert len(observed) == 2 and all(o.shape == (4, 1) for o in observed)


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


def test_init_sets_ada_kimg_100_unless_the_recipe_names_it(tmp_path, digits):  # noqa: F811
    """stylegan2-ada-pytorch: resuming from a pretrained network sets ada_kimg = 100 (p reacts 5x faster)."""
    source = tmp_path / "source"
    run(tiny_recipe(tmp_path, digits, iterations=2, lr_decay=False), source)
    init = str(source / "latest.pt")
    # tiny_recipe writes every key it is given: write one without ada_kimg, with ADA on
    plain = tmp_path / "ada.toml"
    plain.write_text(tiny_recipe(tmp_path, digits, augment="ada").read_text())
    assert "ada_kimg" not in plain.read_text()
    recipe, _, how = resolve_init(recipe_path=plain, overrides=[], outdir=tmp_path / "a", init=init,
                                  data_override=[])
    assert recipe.train.ada_kimg == 100 and "ada_kimg = 100 (transfer learning" in how
    recipe, _, how = resolve_init(recipe_path=plain, overrides=["train.ada_kimg=250"], outdir=tmp_path / "b",
                                  init=init, data_override=[])
    assert recipe.train.ada_kimg == 250 and "ada_kimg = 250 (from the recipe)" in how
    named = tiny_recipe(tmp_path, digits, augment="ada", ada_kimg=500.0)
    recipe, _, _ = resolve_init(recipe_path=named, overrides=[], outdir=tmp_path / "c", init=init, data_override=[])
    assert recipe.train.ada_kimg == 500
    # a new run without --init keeps the paper's 500
    assert recipes.load(plain).train.ada_kimg == 500


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
    # another architecture is named as such (not by the first key that happens to differ)
    sg2 = tmp_path / "sg2.toml"
    sg2.write_text(tiny_recipe(tmp_path, digits).read_text().replace('name = "_tiny_test"\nresolution = 8',
                                                                      'name = "stylegan2"\nresolution = 8'))
    with pytest.raises(ConfigError, match=r"\[model\] is stylegan2, but the --init checkpoint .* holds a _tiny_test"):
        resolve_init(recipe_path=sg2, overrides=[], outdir=tmp_path / "x", init=str(source / "latest.pt"),
                     data_override=[])
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


def test_freezed_counts_layers_as_stylegan2_ada_pytorch():
    """Official ``--freezed N`` (training/networks.py DiscriminatorBlock): layer indices run over the blocks from
    the image resolution down to 8 px: fromrgb (first block of a resnet D only), then conv0, conv1, skip per
    block; a layer is frozen when its index < N; the 4x4 epilogue is never frozen."""
    from natgan.train.freeze import describe_frozen, frozen_modules, official_layers

    resolution = 32
    D = create("stylegan2", resolution=resolution, style_dim=16, n_mlp=2, channel_max=16).discriminator
    official = ["b32.fromrgb"] + [f"b{r}.{layer}" for r in (32, 16, 8) for layer in ("conv0", "conv1", "skip")]

    def as_official(name):   # nat-gan's (rosinality) module -> the official layer it is
        parts = name.split(".")
        k = int(parts[1])
        if k == 0:
            return "b32.fromrgb"
        return f"b{resolution >> (k - 1)}." + {"conv1": "conv0", "conv2": "conv1", "skip": "skip"}[parts[2]]

    assert len(official_layers(D, resolution)) == len(official) == 10
    modules = dict(D.named_modules())
    for n in range(0, len(official) + 3):
        names = frozen_modules(D, resolution, layers=n)
        weights = [m for m in names if any(p.ndim >= 2 for p in modules[m].parameters(recurse=False))]
        assert [as_official(m) for m in weights] == official[:n], n
        # every bias goes with its layer: the frozen parameters are exactly those of these layers' modules
        assert all(m.startswith("convs.") for m in names)
    assert frozen_modules(D, resolution, layers=4) == frozen_modules(D, resolution, levels=1)   # 3L + 1 = L levels
    assert frozen_modules(D, resolution, layers=7) == frozen_modules(D, resolution, levels=2)
    line = describe_frozen(D, resolution, frozen_modules(D, resolution, layers=5), layers=5)
    assert "train.freezed = 5" in line and "5 of 10" in line and "convs.2.conv1.0" in line
    with pytest.raises(ConfigError, match="not both"):
        frozen_modules(D, resolution, levels=1, layers=4)


@pytest.mark.parametrize("architecture", ["orig", "skip"])
def test_freezed_counts_orig_and_skip_layers_as_stylegan2_ada_pytorch(architecture):
    """The same count for the official non-residual blocks: DiscriminatorBlock builds fromrgb when it is the
    first block or the architecture is 'skip', then conv0, conv1, and no skip conv; the epilogue (with the
    'skip' D's 4x4 fromrgb) is never frozen."""
    from natgan.train.freeze import official_layers

    resolution = 32
    D = create("stylegan2", resolution=resolution, style_dim=16, n_mlp=2, channel_max=16,
               d_architecture=architecture).discriminator
    official = [f"b{r}.{layer}" for r in (32, 16, 8)
                for layer in (("fromrgb",) if r == resolution or architecture == "skip" else ()) + ("conv0", "conv1")]

    def as_official(name):
        parts = name.split(".")
        k = int(parts[1])
        if k == 0:
            return "b32.fromrgb"
        return f"b{resolution >> (k - 1)}." + {"from_rgb": "fromrgb", "conv1": "conv0", "conv2": "conv1"}[parts[2]]

    assert [as_official(layer[0]) for layer in official_layers(D, resolution)] == official


def test_freezed_and_freeze_d_together_are_refused(tmp_path, digits):  # noqa: F811
    with pytest.raises(ConfigError, match="train.freezed.*not both"):
        recipes.load(tiny_recipe(tmp_path, digits, freeze_d=1, freezed=4))


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
@pytest.mark.parametrize("unit", ["freeze_d = 1", "freezed = 4"])   # 3L + 1 official layers = L levels
def test_frozen_d_parameters_stay_bitwise_unchanged(tmp_path, update, unit):
    from natgan.data import prepare_digits

    data = tmp_path / "d16.lmdb"
    prepare_digits(data, sizes=[16], progress=False)
    cfg = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in REDUCED["stylegan2"].items())
    text = (f"[model]\nname = \"stylegan2\"\n{cfg}[data]\npath = \"{data}\"\nworkers = 0\n[train]\nbatch = 4\n"
            f"iterations = 3\nlr_decay = false\nr1_every = 1\n{unit}\nupdate = \"{update}\"\nseed = 1\n"
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
    assert frozen_names == {n for n in before if n.startswith(("convs.0.", "convs.1."))}   # level 0 either way
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"Freeze-D: train.{unit.split()[0]} = " in log and "convs.1.skip.1" in log
    # G still learned through the frozen layers
    assert t.step == 3


def test_small_dataset_recipe_is_the_official_architecture_with_ada():
    """So `--init` from the imported official FFHQ-256 StyleNAT fits it without any --set model.*."""
    from natgan import recipe as recipes

    small, ffhq = recipes.load("recipes/stylenat_small_ada.toml"), recipes.load("recipes/ffhq256.toml")
    assert small.to_dict()["model"] == ffhq.to_dict()["model"]
    assert (small.train.augment, small.train.augment_pipe, small.train.ada_target, small.train.ada_kimg) == \
        ("ada", "bgc", 0.6, 500.0)
