"""The on-disk LMDB layout shared with the official StyleSwin/StyleNAT/rosinality code, plus our metadata.

Official layout (what their ``MultiResolutionDataset`` reads): an LMDB directory with
``b"length"`` -> ``str(count)`` and ``f"{size}-{index:05d}"`` -> encoded image, several sizes in one
file. nat-gan adds one record, ``__natgan_meta__`` (JSON), which official readers never look at, so
our files work there and theirs work here (they simply have no metadata).

Completeness: the builder writes ``length`` and the metadata in the *last* transaction, after every
image is committed. An LMDB without ``length`` is therefore an interrupted build, ours or theirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import lmdb

from natgan.errors import DataError
from natgan.limits import MAX_DEPTH, check_untrusted
from natgan.fsutil import fsync_dir  # noqa: F401  (re-exported for the writer)

LENGTH_KEY = b"length"
META_KEY = b"__natgan_meta__"
FORMAT_NAME = "natgan-lmdb"
FORMAT_VERSION = 1
MAP_SIZE = 1 << 40  # 1 TiB of address space (sparse on Linux), as the official builder


def record_key(size: int, index: int) -> bytes:
    """Official key: ``f"{size}-{index:05d}"`` (indices >= 100000 simply get more digits)."""
    return f"{size}-{index:05d}".encode()


def is_lmdb_dir(path: Path) -> bool:
    return path.is_dir() and (path / "data.mdb").is_file()


@contextlib.contextmanager
def damage_as_data_error(path: str | os.PathLike) -> Iterator[None]:
    """Turn LMDB's own errors while reading (``MDB_CORRUPTED``, bad page types, ...) into one line naming
    the dataset, instead of a traceback from deep inside a read."""
    try:
        yield
    except lmdb.Error as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: damaged LMDB ({detail}); rebuild it with `nat-gan prepare`") from None


_META_MAGIC = 0xBEEFC0DE


def check_complete_file(path: Path) -> None:
    """Refuse a data.mdb shorter than its own meta pages say (a truncated copy).

    Why: LMDB memory-maps the file and trusts its meta pages; reading a page past the end of a
    truncated file is a SIGBUS that kills the process with no message. The newer of the two meta pages
    (LMDB's 64-bit layout) records the last page in use and the page size, so the file must be at least
    ``(last_pg + 1) * page_size`` bytes. Garbage meta pages are left to LMDB, which reports them.
    """
    data_file = path / "data.mdb"
    try:
        size = data_file.stat().st_size
        with open(data_file, "rb") as fh:
            head = fh.read(4096 + 160)
    except OSError as exc:
        raise DataError(f"{path}: cannot read data.mdb ({exc.strerror or exc})") from None
    metas = []
    for offset in (0, 4096):
        block = head[offset:offset + 160]
        if len(block) < 160 or struct.unpack_from("<I", block, 16)[0] != _META_MAGIC:
            continue
        page_size = struct.unpack_from("<I", block, 40)[0]
        last_pg, txnid = struct.unpack_from("<QQ", block, 136)
        metas.append((txnid, last_pg, page_size))
    if not metas:
        return
    _, last_pg, page_size = max(metas)
    if page_size and (last_pg + 1) * page_size > size:
        raise DataError(f"{path}: data.mdb is truncated ({size:,} bytes, its header needs "
                        f"{(last_pg + 1) * page_size:,}); the copy is incomplete")


class ReadHandle:
    """A holder's reference to a read-only LMDB environment shared by the whole process.

    Opened as the official reader does (no lock-file writes, no readahead). Two constraints shape it:
    py-lmdb refuses to open the same files twice in one process (a trainer and an FID call may read
    the same dataset), and it also refuses in a *forked child* whatever the parent had open at fork
    time. So environments live in one per-process registry, are opened lazily by :meth:`env`, and are
    all closed just before this process forks (the parent re-opens on its next read), which lets
    DataLoader / ``prepare`` workers open their own. The key includes data.mdb's inode, so a dataset
    rebuilt with ``--overwrite`` is never read through a stale handle on the replaced file.
    """

    def __init__(self, path: Path):
        if not path.exists():
            raise DataError(f"{path}: no such dataset")
        if not is_lmdb_dir(path):
            raise DataError(f"{path}: not an LMDB directory (no data.mdb inside)")
        self.path = path
        self.ident = (os.path.realpath(path), os.stat(path / "data.mdb").st_ino)
        _users[self.ident] = _users.get(self.ident, 0) + 1
        self._released = False
        self.env()  # fail now, with the path, if it cannot be opened

    def env(self) -> lmdb.Environment:
        env = _envs.get(self.ident)
        if env is None:
            check_complete_file(self.path)
            try:
                env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, meminit=False,
                                max_readers=256, subdir=True)
            except lmdb.Error as exc:
                raise DataError(f"{self.path}: cannot open LMDB ({exc})") from None
            _envs[self.ident] = env
        return env

    def release(self) -> None:
        """This holder is done; the environment closes when its last holder in this process is."""
        if self._released:
            return
        self._released = True
        users = _users.get(self.ident, 0) - 1
        if users > 0:
            _users[self.ident] = users
            return
        _users.pop(self.ident, None)
        env = _envs.pop(self.ident, None)
        if env is not None:
            env.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "ident": self.ident, "_released": True}  # no refcount across processes


_envs: dict[tuple[str, int], lmdb.Environment] = {}  # open environments of this process
_users: dict[tuple[str, int], int] = {}              # live ReadHandles per environment


def _close_before_fork() -> None:
    for env in _envs.values():
        env.close()
    _envs.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_before_fork)


def incomplete(path: Path) -> DataError:
    return DataError(f"{path}: incomplete LMDB (no 'length' record): an interrupted build? "
                     f"rebuild it with `nat-gan prepare ... --overwrite`")


def read_length(env: lmdb.Environment, path: Path) -> int:
    """The ``length`` record, or a DataError saying the build is incomplete."""
    with env.begin() as txn:
        raw = txn.get(LENGTH_KEY)
    if raw is None:
        raise incomplete(path)
    try:
        length = int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: 'length' record is not an integer ({raw[:40]!r})") from None
    entries = env.stat()["entries"]
    if not 0 <= length <= entries:  # each image is at least one record: a larger length is a lie
        raise DataError(f"{path}: 'length' record says {length:,} images, but the LMDB holds only {entries:,} "
                        f"records (a damaged or hand-edited file)")
    return length


def read_meta(env: lmdb.Environment, path: Path) -> dict[str, Any] | None:
    """Our metadata record, ``None`` for official LMDBs (which have none)."""
    with env.begin() as txn:
        raw = txn.get(META_KEY)
    if raw is None:
        return None
    where = f"{path}: metadata record {META_KEY.decode()!r}"
    if len(raw) > MAX_META_BYTES:
        raise DataError(f"{where} is {len(raw):,} bytes (a nat-gan record is a few kB; limit {MAX_META_BYTES:,})")
    try:
        meta = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{where} is not valid JSON") from None
    except RecursionError:
        raise DataError(f"{where} is nested more than {MAX_DEPTH} levels deep") from None
    check_untrusted(meta, where, error=DataError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DataError(f"{where} is not a {FORMAT_NAME} record")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{where}: key 'format_version': expected an int, got {version!r}")
    if version > FORMAT_VERSION:
        raise DataError(f"{path}: written by a newer nat-gan (format_version {meta['format_version']}, "
                        f"this one reads <= {FORMAT_VERSION}); upgrade nat-gan")
    _check_meta_fields(meta, where)
    return meta


MAX_META_BYTES = 16 << 20
# The fields nat-gan reads back (reader, check, prepare's "already built" test): type-checked once here, so a
# hand-edited record (``sizes = "abc"``, ``count = [1]``) is one line naming the key, not a traceback later.
_META_FIELDS: dict[str, Any] = {
    "count": "int", "sizes": "ints", "dataset": "str", "encoding": "str", "skipped": "list",
    "resize": {"filter": "str"}, "source": {"path": "str", "layout": "str"},
}
_META_OPTIONAL: dict[str, Any] = {"size_hashes": "str->str", "content_hash": "str", "request": "dict",
                                  "ignored_files": "int", "warnings": "list", "upscaled": "int"}


def _field_ok(value: Any, kind: Any) -> bool:
    if isinstance(kind, dict):
        return isinstance(value, dict) and all(k in value and _field_ok(value[k], t) for k, t in kind.items())
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == "ints":
        return isinstance(value, list) and bool(value) and all(_field_ok(v, "int") and v > 0 for v in value)
    if kind == "str->str":
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return isinstance(value, {"str": str, "list": list, "dict": dict}[kind])


def _check_meta_fields(meta: dict[str, Any], where: str) -> None:
    wanted = {**_META_FIELDS, **{k: t for k, t in _META_OPTIONAL.items() if k in meta}}
    for key, kind in wanted.items():
        if key not in meta:
            raise DataError(f"{where}: missing key '{key}'")
        if not _field_ok(meta[key], kind):
            expected = {"int": "an int >= 0", "ints": "a list of positive ints", "str": "a string",
                        "list": "a list", "dict": "a table", "str->str": "a table of strings"}
            what = expected.get(kind, "a table with " + ", ".join(kind)) if isinstance(kind, str) else \
                "a table with " + ", ".join(kind)
            raise DataError(f"{where}: key '{key}': expected {what}, got {json.dumps(meta[key])[:60]}")


def scan_sizes(env: lmdb.Environment) -> list[int]:
    """Every ``{size}-`` key prefix in the LMDB, found by jumping from prefix to prefix (O(#sizes · log n)).

    Official LMDBs carry no list of their sizes; this reads it off the key space without a full scan.
    """
    sizes: list[int] = []
    with env.begin() as txn, txn.cursor() as cur:
        found = cur.first()
        while found:
            key = cur.key()
            prefix, dash, rest = key.partition(b"-")
            if dash and prefix.isdigit() and rest.isdigit():
                sizes.append(int(prefix))
                found = cur.set_range(prefix + b"-\xff")  # first key after every "{size}-..." record
            else:
                found = cur.next()
    return sorted(sizes)


def write_meta_value(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
