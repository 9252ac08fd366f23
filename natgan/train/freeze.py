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
        D.eval()
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


def frozen_parameters(D: torch.nn.Module, resolution: int, levels: int) -> frozenset[int]:
    """ids of the parameters of D's first ``levels`` resolution levels (empty for ``levels = 0``)."""
    if levels <= 0:
        return frozenset()
    by_module = module_levels(D, resolution)
    available = max(by_module.values(), default=-1) + 1
    if levels > available:
        raise ConfigError(f"key 'train.freeze_d': {levels} exceeds the discriminator's {available} "
                          f"resolution levels")
    modules = dict(D.named_modules())
    return frozenset(id(p) for name, level in by_module.items() if level < levels
                     for p in modules[name].parameters(recurse=False))
