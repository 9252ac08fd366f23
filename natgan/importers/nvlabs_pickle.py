"""Read NVlabs network pickles (stylegan2-ada-pytorch, GANformer's PyTorch code) without running their code.

Those snapshots are ``pickle.dump({G, D, G_ema, augment_pipe, training_set_kwargs})`` where every network is
a ``torch_utils.persistence`` record: ``_reconstruct_persistent_obj({type, version, module_src, class_name,
state})``. Unpickling them with the official code ``exec``\\ s ``module_src``, i.e. runs whatever the file
carries. Here :class:`_RestrictedUnpickler` resolves a fixed allow-list of names to *our own* harmless
callables and refuses every other global with a one-line error naming it:

* ``torch_utils.persistence._reconstruct_persistent_obj`` ->
  :class:`~natgan.importers.nvlabs_records.PersistentRecord` (class name, constructor kwargs, parameters,
  buffers, child records); ``module_src`` is kept as text and never compiled;
* tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` as ``torch.load(weights_only=True)``
  allows them; storages, which plain ``pickle`` nests as bytes of a ``torch.save`` file
  (``torch.storage._load_from_bytes``), are read with ``torch.load(weights_only=True)`` as well;
* plain containers: ``collections.OrderedDict``, ``dnnlib.util.EasyDict`` (read as a dict), numpy numeric
  scalars/dtypes (rebuilt from their bytes; object dtypes refused), torch's own container modules
  (``ModuleList``/``ModuleDict``/``Sequential``/``Identity``/``Dropout``: read as records, never
  constructed).

Nothing from the file is imported: :meth:`find_class` returns only functions and classes defined here (and
the record types of :mod:`natgan.importers.nvlabs_records`). This module only reads; the converters
(chosen by :mod:`natgan.importers.dispatch`) turn the records into format v1.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from natgan.archive import ArchiveError, check_torch_file
from natgan.errors import CheckpointError
from natgan.limits import check_untrusted
from natgan.importers.nvlabs_records import ModuleRecord, PersistentRecord, state_dict

PERSISTENCE = ("torch_utils.persistence", "_reconstruct_persistent_obj")


def _module_record(torch_name: str) -> type:
    return type(torch_name.rsplit(".", 1)[-1] + "Record", (ModuleRecord,),
                {"torch_name": torch_name, "class_name": torch_name, "state": {}})


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Replacement for the official hook: returns the record instead of executing ``meta['module_src']``."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else meta
        raise pickle.UnpicklingError(f"persistence record of type {kind!r} (only 'class' records are read)")
    class_name, module_src, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(module_src, str) or not isinstance(state, dict):
        raise pickle.UnpicklingError("malformed persistence record (class_name, module_src, state)")
    return PersistentRecord(class_name, module_src, dict(state))


class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` read as the plain dict it is."""


def _load_storage_bytes(data: bytes) -> Any:
    """A storage nested as the bytes of a ``torch.save`` file: read with ``weights_only=True`` too."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"storage bytes expected, got {type(data).__name__}")
    check_torch_file(data, "a tensor's nested torch file")  # sizes bounded, CRCs verified before torch.load
    try:
        return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise _Refused(f"'{found.group(1) if found else 'an object'}' inside a storage's nested torch file") from None


class _DType:
    """``numpy.dtype(name, align, copy)`` + its pickled state: only numeric kinds are accepted."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False):
        try:
            self.dtype = np.dtype(str(name))
        except TypeError:
            raise pickle.UnpicklingError(f"numpy dtype {name!r}") from None
        if self.dtype.kind not in "biufc":
            raise pickle.UnpicklingError(f"numpy dtype {name!r} (only numeric dtypes are read)")

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in "<>|=":
            self.dtype = self.dtype.newbyteorder(state[1]) if state[1] in "<>" else self.dtype


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, _DType) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy scalar without a numeric dtype and its bytes")
    return np.frombuffer(bytes(data), dtype=dtype.dtype, count=1)[0].item()


_TORCH_CONTAINERS = ("torch.nn.modules.container.ModuleList", "torch.nn.modules.container.ModuleDict",
                     "torch.nn.modules.container.Sequential", "torch.nn.modules.linear.Identity",
                     "torch.nn.modules.dropout.Dropout")

_ALLOWED: dict[tuple[str, str], Any] = {
    PERSISTENCE: _reconstruct_persistent_obj,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **{tuple(name.rsplit(".", 1)): _module_record(name) for name in _TORCH_CONTAINERS},
}


class _Refused(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise _Refused(f"'{module}.{name}'")
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {str(pid)[:60]!r}")


def read_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with the allow-list above; anything else is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with open(path, "rb") as fh:
            obj = _RestrictedUnpickler(fh).load()
        check_untrusted(obj, str(path), error=CheckpointError,
                        children=lambda o: o.state if isinstance(o, PersistentRecord) else None)
        return obj
    except ArchiveError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except _Refused as exc:
        raise CheckpointError(f"{path}: refused to unpickle {exc.what}: NVlabs snapshots may contain only "
                              f"persistence records, tensors and plain containers (nothing from the file is "
                              f"imported or run)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, OSError, RecursionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable network pickle ({first})") from None


def read_snapshot(path: str | Path) -> dict[str, Any]:
    """A snapshot dict with persistence records under ``G``/``D``/``G_ema`` (``G_ema`` required).

    GANformer names its EMA generator ``Gs``; it is returned under ``G_ema`` as well.
    """
    obj = read_pickle(path)
    if isinstance(obj, dict) and "G_ema" not in obj and isinstance(obj.get("Gs"), PersistentRecord):
        obj = {**obj, "G_ema": obj["Gs"]}
    if not isinstance(obj, dict) or not isinstance(obj.get("G_ema"), PersistentRecord):
        found = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not an NVlabs network snapshot (expected a dict with a 'G_ema' network; "
                              f"found {found or 'nothing'})")
    return obj


def detect_kind(snapshot: dict[str, Any], path: str | Path) -> str:
    """``stylegan2-ada`` or ``ganformer``, from the generator's record (never from running its source)."""
    g = snapshot["G_ema"]
    synthesis_kwargs = g.init_kwargs.get("synthesis_kwargs") or {}
    names = set(state_dict(g, str(path)))
    if any(re.search(r"(^|\.)(att|attn|attention)", n) for n in names) or "components_num" in synthesis_kwargs \
            or "k" in g.init_kwargs:
        return "ganformer"
    if g.class_name == "Generator" and any(n.startswith("synthesis.b4.") for n in names):
        return "stylegan2-ada"
    raise CheckpointError(f"{path}: an NVlabs snapshot whose generator ({g.class_name}) is neither stylegan2-ada "
                          f"nor GANformer; nat-gan has no counterpart for it")
