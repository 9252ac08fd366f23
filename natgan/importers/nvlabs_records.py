"""NVlabs network records as data: what the official code would have rebuilt from a snapshot, unrun.

:mod:`natgan.importers.nvlabs_pickle` turns every ``torch_utils.persistence`` object of a stylegan2-ada or
GANformer snapshot into a :class:`PersistentRecord` (torch's own container modules into a
:class:`ModuleRecord`); the converters (:mod:`~natgan.importers.stylegan2_ada`,
:mod:`~natgan.importers.ganformer`) read those records with the helpers here. Why a module of its own:
the reader and the converters both need these types, and with them here neither imports the other.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

from natgan.errors import CheckpointError


class PersistentRecord:
    """A ``torch_utils.persistence`` object as data: what the official code would have rebuilt, unrun."""

    def __init__(self, class_name: str, module_src: str, state: dict[str, Any]):
        self.class_name = class_name
        self.module_src = module_src        # text only; never compiled or executed
        self.state = state

    @property
    def init_kwargs(self) -> dict[str, Any]:
        kwargs = self.state.get("_init_kwargs") or {}
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    def children(self) -> dict[str, Any]:
        modules = self.state.get("_modules") or {}
        return dict(modules) if isinstance(modules, dict) else {}

    def child(self, name: str) -> "PersistentRecord | ModuleRecord":
        node = self.children().get(name)
        if not isinstance(node, (PersistentRecord, ModuleRecord)):
            raise KeyError(name)
        return node

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"


class ModuleRecord(PersistentRecord):
    """One of torch's own modules (``ModuleList``, ``Dropout`` …) met inside a record: its state, as data.

    Pickle creates it with ``cls.__new__`` (no ``__init__``) and hands the module's ``__dict__`` to
    :meth:`__setstate__`; nothing of torch's class runs.
    """

    torch_name = ""
    module_src = ""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(type(self).torch_name, "", {})

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{type(self).torch_name}: expected a dict state, got {type(state).__name__}")
        self.class_name, self.module_src, self.state = type(self).torch_name, "", state



def state_dict(record: PersistentRecord, where: str) -> dict[str, torch.Tensor]:
    """Flatten a record tree into ``name -> tensor`` like ``nn.Module.state_dict()`` (parameters, buffers)."""
    out: dict[str, torch.Tensor] = {}

    def walk(node: PersistentRecord, prefix: str) -> None:
        for field in ("_parameters", "_buffers"):
            for name, value in (node.state.get(field) or {}).items():
                if value is None:
                    continue
                if not isinstance(value, torch.Tensor):
                    raise CheckpointError(f"{where}: '{prefix}{name}' is {type(value).__name__}, not a tensor")
                out[prefix + name] = value.detach()
        for name, child in node.children().items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise CheckpointError(f"{where}: submodule '{prefix}{name}' is {type(child).__name__}, not a record")
            walk(child, f"{prefix}{name}.")

    walk(record, "")
    return out


def check_network(record: PersistentRecord, class_name: str, model: str, src: str, *,
                  conditional: bool = False) -> dict[str, Any]:
    """Constructor kwargs of an RGB ``class_name`` record (``z_dim == w_dim`` for generators), unconditional
    unless the converter maps the label layers (``conditional``); anything else is refused with the reason,
    since nat-gan's ``model`` would compute something different."""
    if record.class_name != class_name:
        raise CheckpointError(f"{src}: a '{record.class_name}' record where the {model} snapshot has a '{class_name}'")
    kw = record.init_kwargs
    problem = None
    if kw.get("c_dim", 0) and not conditional:
        problem = f"{class_name} is class-conditional (c_dim = {kw['c_dim']})"
    elif kw.get("img_channels", 3) != 3:
        problem = f"{class_name} works on {kw['img_channels']}-channel images"
    elif class_name == "Generator" and kw.get("z_dim") != kw.get("w_dim"):
        problem = f"z_dim = {kw.get('z_dim')} differs from w_dim = {kw.get('w_dim')}"
    if problem:
        raise cannot_express(src, problem, model)
    return kw


def class_count(kwargs: dict[str, Any], src: str, which: str) -> int:
    """The record's ``c_dim`` (0 = unconditional), refused unless it is a non-negative integer."""
    c_dim = kwargs.get("c_dim", 0)
    if not isinstance(c_dim, int) or isinstance(c_dim, bool) or c_dim < 0:
        raise CheckpointError(f"{src}: {which}: c_dim is {c_dim!r}, not a class count")
    return c_dim


def cannot_express(src: str, what: str, model: str) -> CheckpointError:
    """The one-line refusal for configurations nat-gan's ``model`` does not compute."""
    return CheckpointError(f"{src}: {what}; nat-gan's {model} cannot express it")


def is_count(value: Any, least: int) -> bool:
    """An int (not a bool) of at least ``least``: what the official constructors take as a size or count."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def minibatch_stddev_head(epilogue: dict[str, Any], src: str, model: str) -> dict[str, int]:
    """``mbstd_group`` / ``mbstd_channels`` from a D's ``epilogue_kwargs`` (official defaults 4 / 1; a group of
    None, the whole minibatch, is nat-gan's 0), refused unless they are counts."""
    group, channels = epilogue.get("mbstd_group_size", 4), epilogue.get("mbstd_num_channels", 1)
    if group is not None and not is_count(group, 1):
        raise cannot_express(src, f"D minibatch-stddev group {group!r}", model)
    if not is_count(channels, 0):
        raise cannot_express(src, f"D minibatch-stddev with {channels!r} channels", model)
    return {"mbstd_group": 0 if group is None else group, "mbstd_channels": channels}
