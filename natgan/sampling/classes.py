"""Which class each generated image gets, for class-conditional generators.

A *label source* is a callable ``seeds -> int64 [len(seeds)]`` on the CPU, so the class of an image is a
function of its seed alone, like its latent: the same seed gives the same (image, class) on any device
and in any batch. Three sources cover every use:

* :func:`fixed_class`: one class for every image (``sample --class 3``);
* :func:`cycling_classes`: seed ``s`` gets class ``s mod K`` (the trainer's preview grids);
* :func:`dataset_labels`: the label of a dataset image picked by the seed (uniformly, from a generator
  seeded with the seed), i.e. labels follow the dataset's class distribution - stylegan2-ada-pytorch's
  conditional metric protocol, which draws the generated set's labels from the dataset.

:func:`parse_class` turns ``--class`` text (an index, a class name, a comma list, or ``all``) into indices.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from natgan.errors import ConfigError
from natgan.models.conditioning import ClassBoundGenerator

LabelSource = Callable[[Sequence[int]], torch.Tensor]
LABEL_SALT = 0x1AB3_15  # keeps a seed's label draw apart from its latent draw (same seed, other stream)


def num_classes_of(G: nn.Module) -> int:
    return int(getattr(G, "num_classes", 0) or 0)


def fixed_class(index: int) -> LabelSource:
    return lambda seeds: torch.full((len(seeds),), int(index), dtype=torch.long)


def cycling_classes(num_classes: int) -> LabelSource:
    return lambda seeds: torch.tensor([int(s) % num_classes for s in seeds], dtype=torch.long)


def dataset_labels(pool: torch.Tensor | Sequence[int]) -> LabelSource:
    """Labels of dataset images chosen per seed: the dataset's class distribution, reproducibly."""
    pool = torch.as_tensor(pool, dtype=torch.long)
    if pool.numel() == 0:
        raise ValueError("no dataset labels to draw from")

    def draw(seeds: Sequence[int]) -> torch.Tensor:
        picks = [int(torch.randint(len(pool), (), generator=torch.Generator().manual_seed(int(s) ^ LABEL_SALT)))
                 for s in seeds]
        return pool[torch.tensor(picks, dtype=torch.long)]

    return draw


def class_names_of(ckpt: dict, num_classes: int) -> list[str]:
    """Class names a checkpoint records (a conditional run stores its dataset's), else "0" ... "K-1"."""
    names = (ckpt.get("extra") or {}).get("classes")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def parse_class(text: str, names: Sequence[str], *, option: str = "--class") -> list[int]:
    """``"3"`` / ``"cat"`` / ``"3,cat"`` / ``"all"`` -> class indices; a name wins over an equal index text."""
    if not names:
        raise ConfigError(f"{option} {text}: the checkpoint is unconditional (model.num_classes = 0); drop {option}")
    if text.strip().lower() == "all":
        return list(range(len(names)))
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part in names:
            out.append(list(names).index(part))
        elif part.lstrip("-").isdigit() and 0 <= int(part) < len(names):
            out.append(int(part))
        else:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(f"{option} {part!r}: not a class of this checkpoint ({len(names)} classes: {shown}; "
                              f"or an index 0-{len(names) - 1}, or all)")
    if not out:
        raise ConfigError(f"{option} '{text}': name at least one class (index, name or all)")
    return out


def class_argument(index: int, names: Sequence[str], *, option: str = "--class") -> str:
    """The ``--class`` text that :func:`parse_class` reads back as exactly class ``index``: its name when that
    is unambiguous (readable in a command line), else the index. The inverse that captured commands need."""
    if not 0 <= int(index) < len(names):
        raise ConfigError(f"class {index}: outside 0-{len(names) - 1}")
    candidates = [names[index], str(int(index))]
    for text in candidates:
        if "," not in text and text.strip() == text and text and text.lower() != "all":
            try:
                if parse_class(text, names, option=option) == [int(index)]:
                    return text
            except ConfigError:
                continue
    raise ConfigError(f"class {index} ({names[index]!r}): its name and index both name another class; "
                      f"{option} cannot select it")


def chosen_classes(G: nn.Module, ckpt: dict | None, text: str | None, *, option: str = "--class",
                   where: object = "the generator") -> list[int]:
    """``--class`` text -> class indices; [] for an unconditional model without it. One-line ConfigErrors for
    ``--class`` on an unconditional model, an unknown class, and a conditional model without ``--class``."""
    k = num_classes_of(G)
    names = class_names_of(ckpt or {}, k) if k else []
    if text is None:
        if names:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(f"{where}: the generator is class-conditional ({len(names)} classes: {shown}); "
                              f"pass {option} INDEX|NAME|all")
        return []
    return parse_class(text, names, option=option)


def bind_class(G: nn.Module, ckpt: dict | None, text: str | None, *, option: str = "--class",
               where: object = "the generator") -> nn.Module:
    """The generator for tools that work in one class (latent modes, project, visualize): ``G`` itself when
    unconditional, else bound to the one class ``text`` names (:class:`ClassBoundGenerator`)."""
    classes = chosen_classes(G, ckpt, text, option=option, where=where)
    if not classes:
        return G
    if len(classes) > 1:
        raise ConfigError(f"{option} '{text}': this mode works in one class at a time, not {len(classes)}")
    return ClassBoundGenerator(G, classes[0])
