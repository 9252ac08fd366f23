"""Fine-tuning: ``nat-gan train --init CKPT`` starts a NEW run from another run's (or an imported) weights.

Unlike ``--resume``, counters, learning-rate schedule, random streams, metrics and augmentation state
start from zero and the recipe supplies data, training and eval settings; only the networks (G, G_ema,
D) and, with ``--init-optim``, the Adam moments come from the checkpoint. The architecture must be the
checkpoint's, so the recipe's ``[model]`` is taken from it: a recipe may omit ``[model]``, and one that
states a different model is a one-line error rather than a silent mismatch.

ADA's speed: stylegan2-ada-pytorch sets ``ada_kimg = 100`` (instead of 500) whenever training resumes
from a pretrained network, so p reacts five times faster in transfer learning, where D overfits a small
dataset quickly. ``--init`` does the same unless the recipe or ``--set`` names ``train.ada_kimg``; the
start line and log.txt say which value is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from natgan import checkpoint, recipe as recipes
from natgan.errors import CheckpointError, ConfigError
from natgan.models import get_spec
from natgan.train.rundir import RunDir

TRANSFER_ADA_KIMG = 100.0   # stylegan2-ada-pytorch's ada_kimg when resuming from a pretrained network


def checkpoint_model(ck: dict) -> dict[str, Any]:
    """The checkpoint's model as a recipe ``[model]`` table."""
    return {"name": ck["model"]["name"], **ck["model"]["config"]}


def resolve_init(*, recipe_path: str | Path | None, overrides: list[str], outdir: str | Path, init: str,
                 data_override: list[str], start_over: bool = False) -> tuple[recipes.Recipe, dict, str]:
    """(recipe with the checkpoint's model, the checkpoint, a one-line description) for ``--init``.

    ``start_over``: the directory's checkpoints will be moved aside by :func:`natgan.train.train`."""
    if RunDir(outdir).has_checkpoints() and not start_over:
        raise ConfigError(f"{RunDir(outdir).path}: already holds checkpoints; --init starts a new run, "
                          f"so choose a new --outdir, add --overwrite to move them aside, "
                          f"or continue that run with --resume auto")
    if recipe_path is None:
        raise ConfigError("--recipe is required with --init (it gives the new data and training settings)")
    if any(o.split("=", 1)[0].strip().startswith("model.") for o in overrides):
        raise ConfigError("--set model.*: with --init the model is the checkpoint's and cannot change")
    ck = checkpoint.load(init)
    path = Path(recipe_path)
    raw = recipes.read_raw(path)
    model = checkpoint_model(ck)
    if "model" in raw:
        theirs = str(model.get("name"))
        ours = recipes.from_dict(raw, source=str(path)).model_name
        if get_spec(ours).name != get_spec(theirs).name:  # another architecture: say so, not a differing key
            raise ConfigError(f"{path}: [model] is {ours}, but the --init checkpoint {init} holds a {theirs} "
                              f"model; omit [model] to take the checkpoint's, or --init a {ours} checkpoint")
        given = recipes.from_dict(raw, source=str(path)).to_dict()["model"]
        expected = recipes.from_dict({**raw, "model": model}, source=f"{init} (model)").to_dict()["model"]
        if given != expected:
            differing = sorted(k for k in set(given) | set(expected) if given.get(k) != expected.get(k))
            if "num_classes" in differing:
                raise ConfigError(f"{path}: key 'model.num_classes' is {given.get('num_classes')} but the --init "
                                  f"checkpoint {init} has {expected.get('num_classes')} classes; --init keeps the "
                                  f"checkpoint's architecture, so a conditional run cannot start from an "
                                  f"unconditional checkpoint (or the reverse): train it from scratch")
            raise ConfigError(f"{path}: [model] differs from the --init checkpoint {init} (key 'model.{differing[0]}': "
                              f"{given.get(differing[0])!r} vs {expected.get(differing[0])!r}); "
                              f"omit [model] to take the checkpoint's")
    raw["model"] = model
    kimg_given = "ada_kimg" in (raw.get("train") or {}) or any(
        o.split("=", 1)[0].strip() == "train.ada_kimg" for o in overrides)
    if not kimg_given and isinstance(raw.get("train", {}), dict):
        raw["train"] = {**raw.get("train", {}), "ada_kimg": TRANSFER_ADA_KIMG}
    resolved = recipes.apply_overrides(raw, [*overrides, *data_override], base_source=str(path))
    has_d = "D" in ck["weights"]
    how = (f"starting a new run from the weights of {init} ({model['name']}, step {ck['progress']['step']})"
           + ("" if has_d else "; the checkpoint has no discriminator, so D starts from scratch"))
    if resolved.train.augment == "ada":
        how += (f"; ADA ada_kimg = {resolved.train.ada_kimg:g}"
                + (" (from the recipe)" if kimg_given else " (transfer learning, as stylegan2-ada-pytorch's "
                                                           "--resume; set train.ada_kimg to change)"))
    return resolved, ck, how


def load_weights(trainer: Any, ck: dict, *, optim: bool) -> None:
    """Copy G, G_ema and D (and, if asked and present, the optimizer moments) into a fresh trainer."""
    w = ck["weights"]
    trainer.G.load_state_dict(w["G"])
    trainer.G_ema.load_state_dict(w.get("G_ema", w["G"]))
    if "D" in w:
        trainer.D.load_state_dict(w["D"])
    if optim:
        moments = ck.get("optim", {})
        if "G" not in moments or "D" not in moments:
            raise CheckpointError("--init-optim: the checkpoint has no optimizer state (key 'optim.G' / 'optim.D')")
        for opt, state in ((trainer.g_opt, moments["G"]), (trainer.d_opt, moments["D"])):
            load_moments(opt, state)


def load_moments(opt: Any, state: dict) -> None:
    """Adam's moments from ``state``, but the new recipe's hyper-parameters (lr, betas, eps): a state
    dict carries the old run's param groups, which must not leak into the new run."""
    settings = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, own in zip(opt.param_groups, settings):
        group.update(own)
