"""Atomic LMDB building: write under a temporary name, publish with one rename.

Safety design (two independent guards):

1. Everything is written to ``<out>.partial-<pid>`` next to ``<out>``; only after the last commit and
   an fsync is it renamed to ``<out>``. A killed run therefore never leaves anything at ``<out>``.
2. ``length`` and the metadata record go into the *final* transaction. A leftover partial directory
   (or an official build that died) has no ``length``, and every nat-gan reader refuses it as
   incomplete.

Leftover partial directories of dead processes are removed by the next ``prepare`` of the same ``<out>``
(:func:`tidy_leftovers`, which also says what it leaves: builds still running, an interrupted
``--overwrite``'s previous dataset).
``--overwrite`` replaces an existing LMDB by renaming it aside, renaming the new one in, then deleting
the old one; a directory that is not an LMDB is never deleted, even with ``--overwrite``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lmdb

from natgan.fsutil import pid_alive
from natgan.data import lmdb_format as fmt
from natgan.errors import DataError

BATCH_BYTES = 256 << 20    # commit at least every 256 MiB ...
BATCH_IMAGES = 2048        # ... or every 2048 images: few large transactions, bounded memory


def _leftovers(out: Path) -> list[tuple[Path, str, int]]:
    """``(path, tag, pid)`` of every ``<out>.partial-PID`` / ``<out>.replaced-PID`` next to ``out``."""
    found = []
    try:
        siblings = sorted(out.parent.iterdir())
    except OSError:
        return found
    for sibling in siblings:
        for tag in (".partial-", ".replaced-"):
            prefix = out.name + tag
            if sibling.name.startswith(prefix) and sibling.name[len(prefix):].isdigit():
                found.append((sibling, tag, int(sibling.name[len(prefix):])))
    return found


def _only_lmdb_files(path: Path) -> bool:
    return fmt.is_lmdb_dir(path) and all(p.name in ("data.mdb", "lock.mdb") for p in path.iterdir())


def _ours(path: Path) -> bool:
    """Whether ``path`` is what a builder leaves: a real directory, empty or holding only the LMDB files."""
    try:
        return path.is_dir() and not path.is_symlink() and \
            all(p.name in ("data.mdb", "lock.mdb") for p in path.iterdir())
    except OSError:
        return False


def tidy_leftovers(out: Path) -> dict[str, list[str]]:
    """Remove what killed builds of ``out`` left behind, and say what stays (the lists that are not empty).

    * ``removed``: ``<out>.partial-PID`` of dead processes (a killed ``prepare``; never published, so never
      a dataset), and ``<out>.replaced-PID`` of dead processes when ``out`` exists (the old LMDB an
      ``--overwrite`` had already replaced);
    * ``in_progress``: partial builds of processes that are still running: another ``prepare`` of the same
      ``--out``, left alone;
    * ``moved_aside``: ``<out>.replaced-PID`` of a dead process while ``out`` is missing: an ``--overwrite``
      killed between its two renames; that is the previous dataset, kept for the user to rename back;
    * ``not_ours``: leftovers by name that hold more than LMDB files (not something a builder wrote), kept.
    """
    report: dict[str, list[str]] = {}
    for path, tag, pid in _leftovers(out):
        if pid == os.getpid():
            continue                     # this process's own build: LmdbBuilder starts it afresh
        if pid_alive(pid):
            kind = "in_progress"
        elif not _ours(path):
            kind = "not_ours"
        elif tag == ".replaced-" and not out.exists():
            kind = "moved_aside"
        else:
            shutil.rmtree(path, ignore_errors=True)
            kind = "removed"
        report.setdefault(kind, []).append(str(path))
    return report


def check_replaceable(out: Path) -> None:
    """Raise unless ``out`` is something ``--overwrite`` may delete (an LMDB directory and nothing else)."""
    if out.is_symlink():
        raise DataError(f"{out}: is a symbolic link; nat-gan replaces only real LMDB directories, never through a "
                        f"link (remove it or choose another --out)")
    if out.is_dir() and not _only_lmdb_files(out):
        raise DataError(f"{out}: exists and is not an LMDB directory; refusing to overwrite it even with --overwrite")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is a file, not an LMDB directory; remove it or choose another --out")


class LmdbBuilder:
    """Context manager: ``add()`` records, ``finish(count, meta)`` publishes; any exception discards."""

    def __init__(self, out: Path, *, force: bool, batch_bytes: int = BATCH_BYTES,
                 batch_images: int = BATCH_IMAGES):
        self.out = out
        self.force = force
        self.tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
        self.batch_bytes, self.batch_images = batch_bytes, batch_images
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        self._pending_bytes = self._pending_images = 0
        self.bytes_written = 0

    def __enter__(self) -> "LmdbBuilder":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tidy_leftovers(self.out)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        # sync=False/metasync=False: no fsync per commit; durability comes from the explicit
        # env.sync() before the rename, which is the only moment the file becomes visible.
        options = dict(subdir=True, readahead=False, meminit=False, sync=False, metasync=False)
        try:
            self._env = lmdb.open(str(self.tmp), map_size=fmt.MAP_SIZE, **options)
        except lmdb.MemoryError:
            # an address-space limit (ulimit -v) cannot reserve 1 TiB: map half of what is left instead
            from natgan.limits import address_space_left, human_bytes

            left = address_space_left() or 0
            if left < 1 << 27:
                raise DataError(f"{self.out}: cannot map the LMDB ({human_bytes(left)} of address space left; "
                                f"raise `ulimit -v`)") from None
            self._env = lmdb.open(str(self.tmp), map_size=left // 2, **options)
        self._txn = self._env.begin(write=True)
        return self

    def add(self, key: bytes, value: bytes) -> None:
        assert self._txn is not None
        self._txn.put(key, value)
        self._pending_bytes += len(value)
        self.bytes_written += len(value)

    def end_image(self) -> None:
        """Call after each image's records: commits when the batch is large enough."""
        self._pending_images += 1
        if self._pending_images >= self.batch_images or self._pending_bytes >= self.batch_bytes:
            self._commit()

    def _commit(self) -> None:
        assert self._env is not None and self._txn is not None
        self._txn.commit()
        self._txn = self._env.begin(write=True)
        self._pending_bytes = self._pending_images = 0

    def finish(self, count: int, meta: dict[str, Any]) -> None:
        """Commit the images, then ``length`` + metadata last, fsync, and rename into place."""
        assert self._env is not None and self._txn is not None
        self._txn.commit()
        self._env.sync(True)
        with self._env.begin(write=True) as txn:
            txn.put(fmt.LENGTH_KEY, str(count).encode())
            txn.put(fmt.META_KEY, fmt.write_meta_value(meta))
        self._env.sync(True)
        self._env.close()
        self._env = self._txn = None
        self._publish()

    def _publish(self) -> None:
        old = None
        if self.out.exists() or self.out.is_symlink():
            if not self.force:
                raise DataError(f"{self.out}: appeared while building; pass --overwrite to replace it")
            check_replaceable(self.out)
            old = self.out.with_name(f"{self.out.name}.replaced-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        fmt.fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            return
        if self._txn is not None:
            self._txn.abort()
        if self._env is not None:
            self._env.close()
        self._env = self._txn = None
        shutil.rmtree(self.tmp, ignore_errors=True)
