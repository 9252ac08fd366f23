"""Freeze-D (Mo et al. 2020): keep the discriminator's first N resolution levels fixed when fine-tuning.

"Level" is read off the network itself, so it works for every registered family without each
discriminator declaring its layers. A discriminator is a sequence of blocks (``convs.3``,
``from_rgbs.1``, ``blocks.0``, ``stem``: a module path up to its first list index); one forward pass on a
blank image records the spatial size of the input each block's first parameterised layer sees, and
distinct sizes, largest first, are the levels. So a block belongs to the resolution it starts at, as
stylegan2-ada-pytorch's ``b256`` block holds its downsampling conv (the wavelet D's first level is its
half-resolution sub-bands, StyleGAN2's the full resolution). Blocks working on flat features (the final
linear layers) are never frozen. Frozen parameters get ``requires_grad = False`` during D updates, so they
receive no gradient, and Adam leaves them and their moments bitwise unchanged; gradients still flow
*through* them to the images (R1, G's loss).

Two units, one mechanism:

* ``train.freeze_d = L`` counts resolution levels, the unit of the FreezeD paper's code (whole D blocks).
* ``train.freezed = N`` counts layers as stylegan2-ada-pytorch's ``--freezed N`` does, so an official value
  can be typed verbatim: D's weight layers (modules owning a weight of 2+ dimensions, with the bias and
  activation modules that follow them) in construction order, the lowest-resolution level (the official
  4x4 epilogue) and flat layers excluded. For the StyleGAN2 residual D this is the official order:
  fromrgb, then per level conv0, conv1, skip, so ``freezed = 3L + 1`` freezes ``L`` levels
  (``freezed = 10``: the 256, 128 and 64 px blocks at 256 px) and other values freeze part of a level,
  as the official does. Values beyond the count freeze every counted layer (the official accepts them too).

The trainer prints which modules are frozen (:func:`describe_frozen`) on the console and in log.txt.
"""

from __future__ import annotations


import torch

from natgan.errors import ConfigError


def block_of(name: str) -> str:
    """``convs.1.conv2.2`` -> ``convs.1``; ``stem`` -> ``stem`` (the module path up to its first index)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def module_levels(D: torch.nn.Module, resolution: int) -> dict[str, int]:
    """Parameterised module name -> resolution level of its block (0 = nearest the input); modules of
    blocks that never see a 4-D input are left out."""
    first_size: dict[str, int] = {}
    owners: dict[str, str] = {}
    hooks = []
    for name, module in D.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        owners[name] = block_of(name)

        def record(mod, args, block=owners[name]):
            x = args[0] if args else None
            if block not in first_size and isinstance(x, torch.Tensor) and x.ndim == 4:
                first_size[block] = x.shape[-1]
        hooks.append(module.register_forward_pre_hook(record))
    try:
        param = next(D.parameters())
        was_training = D.training
        D.eval()  # no spectral-norm power-iteration step (natgan.models.spectral_norm): training stays as it was
        with torch.no_grad():
            image = torch.zeros(1, 3, resolution, resolution, device=param.device, dtype=param.dtype)
            if getattr(D, "num_classes", 0):  # a conditional D needs a label; its label mapping sees no image
                D(image, torch.zeros(1, dtype=torch.long, device=param.device))
            else:
                D(image)
        D.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    order = sorted({size for size in first_size.values()}, reverse=True)
    return {name: order.index(first_size[block]) for name, block in owners.items() if block in first_size}


def frozen_parameters(D: torch.nn.Module, resolution: int, levels: int, layers: int = 0) -> frozenset[int]:
    """ids of the parameters Freeze-D keeps fixed (empty when both units are 0)."""
    return parameters_of(D, frozen_modules(D, resolution, levels=levels, layers=layers))


def official_layers(D: torch.nn.Module, resolution: int) -> list[list[str]]:
    """D's layers in stylegan2-ada-pytorch's ``freeze_layers`` order: each a list of module names (the weight
    module first, then the bias/activation modules up to the next weight in the same block)."""
    levels = module_levels(D, resolution)
    last = max(levels.values(), default=-1)
    layers: list[list[str]] = []
    for name, module in D.named_modules():
        if name not in levels or levels[name] >= last:
            continue
        own = list(module.parameters(recurse=False))
        if any(p.ndim >= 2 for p in own):
            layers.append([name])
        elif layers and block_of(layers[-1][0]) == block_of(name):
            layers[-1].append(name)
    return layers


def frozen_modules(D: torch.nn.Module, resolution: int, *, levels: int = 0, layers: int = 0) -> list[str]:
    """Names of the modules Freeze-D keeps fixed: D's first ``levels`` resolution levels or its first
    ``layers`` layers in the official count (at most one of them non-zero; see the module docstring)."""
    if levels and layers:
        raise ConfigError("key 'train.freezed': give train.freeze_d (levels) or train.freezed (official layer "
                          "count), not both")
    if layers > 0:
        return [name for layer in official_layers(D, resolution)[:layers] for name in layer]
    if levels <= 0:
        return []
    by_module = module_levels(D, resolution)
    available = max(by_module.values(), default=-1) + 1
    if levels > available:
        raise ConfigError(f"key 'train.freeze_d': {levels} exceeds the discriminator's {available} "
                          f"resolution levels")
    return [name for name, level in by_module.items() if level < levels]


def parameters_of(D: torch.nn.Module, names: list[str]) -> frozenset[int]:
    modules = dict(D.named_modules())
    return frozenset(id(p) for name in names for p in modules[name].parameters(recurse=False))


def describe_frozen(D: torch.nn.Module, resolution: int, names: list[str], *, levels: int = 0,
                    layers: int = 0) -> str:
    """One line for the console and log.txt: the unit asked for and the modules it froze."""
    ids = parameters_of(D, names)
    count = sum(p.numel() for p in D.parameters() if id(p) in ids)
    if layers:
        total = len(official_layers(D, resolution))
        unit = f"train.freezed = {layers} (stylegan2-ada-pytorch layers; {min(layers, total)} of {total})"
    else:
        unit = f"train.freeze_d = {levels} (resolution levels)"
    modules = dict(D.named_modules())
    weights = [n for n in names if any(p.ndim >= 2 for p in modules[n].parameters(recurse=False))]
    return f"Freeze-D: {unit}: {count / 1e6:.2f} M D parameters frozen in {', '.join(weights)}"
