"""One entry point for every supported format: ``--from KIND`` or ``--from auto`` (recognised from the file).

Detection never executes anything from the file: torch containers are read with ``weights_only=True``
(allow-list: ``argparse.Namespace``), NVlabs pickles with :mod:`natgan.importers.nvlabs_pickle`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from natgan.errors import CheckpointError, ConfigError

KINDS = ("stylenat", "styleswin", "rosinality", "stylegan2-ada", "ganformer")


def _is_torch_file(path: Path) -> bool:
    """torch.save writes a zip (torch >= 1.6) or a legacy pickle starting with its magic number."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as fh:
        head = fh.read(16)
    return head.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")


def detect_format(path: str | Path) -> str:
    """The ``--from`` kind of ``path``, or a one-line error saying what the file is not."""
    from natgan.importers import nvlabs_pickle, rosinality
    from natgan.importers.common import load_official_container

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    if _is_torch_file(path):
        obj = load_official_container(path)
        if isinstance(obj, dict) and obj.get("format") == "nat-gan-checkpoint":
            raise CheckpointError(f"{path}: already a nat-gan checkpoint; nothing to import")
        if rosinality.looks_like(obj):
            return "rosinality"
        states = obj.get("state_dicts") if isinstance(obj, dict) and "state_dicts" in obj else obj
        g = states.get("g_ema") if isinstance(states, dict) else None
        if isinstance(g, dict):
            if any(str(k).endswith("relative_position_bias_table") for k in g):
                return "styleswin"
            if any(".attn.rpb" in str(k) for k in g):
                return "stylenat"
        raise CheckpointError(f"{path}: a torch file, but not one of the known layouts (rosinality stylegan2, "
                              f"StyleNAT, StyleSwin); pass --from explicitly")
    return nvlabs_pickle.detect_kind(nvlabs_pickle.read_snapshot(path), path)


def _refuse_non_checkpoint(path: Path) -> None:
    """An image or text file is "not a checkpoint", as ``sample`` says, rather than an unpickler's complaint about
    its first bytes (every supported format is a torch zip or a pickle)."""
    from natgan.checkpoint import looks_pickled, not_a_checkpoint

    try:
        pickled = not path.is_file() or looks_pickled(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not pickled:
        raise CheckpointError(not_a_checkpoint(path))


def import_checkpoint(source: str | Path, kind: str = "auto", size: int | None = None, *,
                      step: int | None = None, keep_split_heads: bool = False,
                      args_override: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(resolved kind, v1 checkpoint dict) for ``source`` read as ``kind`` ("auto" = :func:`detect_format`)."""
    if kind != "auto" and kind not in KINDS:
        raise ConfigError(f"--from {kind}: expected one of auto, {', '.join(KINDS)}")
    _refuse_non_checkpoint(Path(source))
    if kind == "auto":
        kind = detect_format(source)
    if kind in ("stylenat", "styleswin"):
        from natgan.importers.official import import_official

        return kind, import_official(source, kind, size, keep_split_heads=keep_split_heads, step=step,
                                     args_override=args_override)
    if keep_split_heads or args_override:
        raise ConfigError(f"--from {kind}: --keep-split-heads and --arg apply to StyleNAT/StyleSwin files only")
    if kind == "rosinality":
        from natgan.importers.rosinality import import_rosinality

        return kind, import_rosinality(source, size, step=step)
    return kind, import_nvlabs(source, kind, size, step=step)


def import_nvlabs(source: str | Path, kind: str, size: int | None = None, *, step: int | None = None
                  ) -> dict[str, Any]:
    """Convert a stylegan2-ada or GANformer network snapshot to a v1 checkpoint dict: the reader
    (:mod:`~natgan.importers.nvlabs_pickle`) gives records, the format's converter rebuilds the weights."""
    from natgan.importers.nvlabs_pickle import read_snapshot

    snapshot = read_snapshot(source)
    if kind == "stylegan2-ada":
        from natgan.importers.stylegan2_ada import import_stylegan2_ada

        return import_stylegan2_ada(snapshot, str(source), size, step=step)
    if kind == "ganformer":
        from natgan.importers.ganformer import import_ganformer

        return import_ganformer(snapshot, str(source), size, step=step)
    raise CheckpointError(f"--from {kind}: not an NVlabs pickle format")
