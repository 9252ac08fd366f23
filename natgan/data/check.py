"""``check_dataset``: prove a prepared LMDB is complete and intact, record by record.

Every ``{size}-{index:05d}`` record for ``index < length`` must exist, decode fully and be
``size`` x ``size``; no extra records may exist; for nat-gan LMDBs the recomputed content hashes must
equal the stored ones. Official LMDBs (no metadata) get the same record checks and a fresh hash.
Decoding runs in worker processes over chunks of indices; hashes are folded in index order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from natgan.data import imaging
from natgan.data import labels as labelling
from natgan.data import lmdb_format as fmt
from natgan.data.hashing import SizeHasher, dataset_hash, record_digest
from natgan.data.parallel import OrderedMap
from natgan.data.prepare import check_workers, default_workers
from natgan.data.progress import ProgressBar, ProgressCallback
from natgan.data.reader import _PARTIAL
from natgan.errors import DataError

CHUNK = 64


class _ChunkChecker:
    """Decodes indices ``[start, stop)`` at every size; returns digests and problems (picklable)."""

    def __init__(self, path: Path, sizes: list[int]):
        self.path, self.sizes = path, sizes
        self._handle: fmt.ReadHandle | None = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.release()
        self._handle = None

    def __call__(self, span: tuple[int, int]) -> tuple[int, list[list[str | None]], list[tuple[int, str]]]:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = fmt.ReadHandle(self.path), os.getpid()
        return self._check(self._handle.env(), span)

    def _check(self, env, span: tuple[int, int]) -> tuple[int, list[list[str | None]], list[tuple[int, str]]]:
        digests: list[list[str | None]] = []
        problems: list[tuple[int, str]] = []  # (size, message)
        with env.begin() as txn:
            for i in range(*span):
                row: list[str | None] = []
                for size in self.sizes:
                    key = fmt.record_key(size, i)
                    value = txn.get(key)
                    if value is None:
                        problems.append((size, f"record {key.decode()!r} is missing"))
                        row.append(None)
                        continue
                    row.append(record_digest(value))
                    try:
                        img = imaging.decode_rgb(value)
                    except imaging.BadImage as exc:
                        problems.append((size, f"record {key.decode()!r} does not decode ({exc})"))
                        continue
                    if img.size != (size, size):
                        problems.append((size, f"record {key.decode()!r} is {img.width}x{img.height}, "
                                               f"expected {size}x{size}"))
                digests.append(row)
        return span[0], digests, problems


def check_dataset(path: str | os.PathLike, *, workers: int | None = None, progress: bool = True,
                  on_progress: ProgressCallback | None = None, max_problems: int = 20) -> dict[str, Any]:
    """Verify every record; return a report (``ok`` False lists ``problems``). DataError if not an LMDB/incomplete
    or if LMDB itself reports damage (a corrupted B-tree page)."""
    with fmt.damage_as_data_error(Path(path).expanduser()):
        return _check_dataset(path, workers=workers, progress=progress, on_progress=on_progress,
                              max_problems=max_problems)


def _check_dataset(path: str | os.PathLike, *, workers: int | None, progress: bool,
                   on_progress: ProgressCallback | None, max_problems: int) -> dict[str, Any]:
    p = Path(path).expanduser()
    workers = default_workers() if workers is None else check_workers(workers)
    if _PARTIAL.search(p.name):
        raise DataError(f"{p}: a partial build (interrupted or still running), not a dataset")
    handle = fmt.ReadHandle(p)
    try:
        env = handle.env()
        with env.begin() as txn:
            unfinished = txn.get(fmt.LENGTH_KEY) is None
        if unfinished and not fmt.scan_sizes(env) and env.stat()["entries"] > 0:
            raise DataError(f"{p}: an LMDB of raw images (LSUN's export?), not a prepared dataset; build one with "
                            f"`nat-gan prepare church {p}`")
        length = fmt.read_length(env, p)
        meta = fmt.read_meta(env, p)
        sizes = fmt.scan_sizes(env)
        entries = env.stat()["entries"]
        with env.begin() as txn:
            label_value = txn.get(labelling.LABELS_KEY)
    finally:
        handle.release()
    problems: list[str] = []
    label_report = _check_labels(meta, label_value, length, problems)
    if meta is not None:
        if int(meta["count"]) != length:
            problems.append(f"metadata count {meta['count']} != length {length}")
        if sorted(int(s) for s in meta["sizes"]) != sizes:
            problems.append(f"metadata sizes {meta['sizes']} != sizes found {sizes}")
    if not sizes:
        problems.append("no '{size}-{index}' image records")
    expected_entries = length * len(sizes) + 1 + (meta is not None) + (label_value is not None)
    if entries != expected_entries:
        problems.append(f"{entries} records, expected {expected_entries} ({length} images x {len(sizes)} sizes "
                        f"+ length{' + metadata' if meta else ''}{' + labels' if label_value is not None else ''})")

    hashers = {s: SizeHasher() for s in sizes}
    bad_counts = {s: 0 for s in sizes}
    start = time.perf_counter()
    spans = [(s, min(s + CHUNK, length)) for s in range(0, length, CHUNK)]
    checker = _ChunkChecker(p, sizes)
    with OrderedMap(checker, spans, min(workers, len(spans))) as chunks, \
            ProgressBar(length, "check", enabled=progress, callback=on_progress) as bar:
        for first, rows, chunk_problems in chunks:
            for offset, row in enumerate(rows):
                for size, digest in zip(sizes, row):
                    if digest is not None:
                        hashers[size].add(fmt.record_key(size, first + offset), digest)
            for size, message in chunk_problems:
                bad_counts[size] += 1
                problems.append(message)
            bar.advance(len(rows))
    checker.close()
    seconds = time.perf_counter() - start

    size_hashes = {s: h.hexdigest() for s, h in hashers.items()}
    hash_ok = None
    if meta is not None:
        stored = {int(k): v for k, v in meta.get("size_hashes", {}).items()}
        hash_ok = stored == size_hashes and meta.get("content_hash") == dataset_hash(size_hashes)
        if not hash_ok:
            problems.append("content hash differs from the one recorded at prepare time (records changed)")
    return {
        "path": str(p), "ok": not problems,
        "format": f"{fmt.FORMAT_NAME} v{meta['format_version']}" if meta else "official layout (no metadata)",
        "count": length,
        "sizes": {str(s): {"records": length, "bad": bad_counts[s]} for s in sizes},
        "content_hash": dataset_hash(size_hashes), "size_hashes": {str(s): h for s, h in size_hashes.items()},
        "hash_ok": hash_ok, "problems": problems[:max_problems], "problem_count": len(problems),
        "metadata": meta, "labels": label_report, "seconds": round(seconds, 3),
        "images_per_s": round(length / seconds, 1) if seconds > 0 else None,
    }


def _check_labels(meta: dict[str, Any] | None, value: bytes | None, length: int,
                  problems: list[str]) -> dict[str, Any] | None:
    """Labels record vs metadata: present together, one per image, in range, same hash and histogram."""
    recorded = (meta or {}).get("labels")
    if recorded is None:
        if value is not None:
            problems.append(f"a {labelling.LABELS_KEY.decode()!r} record but no labels in the metadata")
        return None
    if value is None:
        problems.append(f"metadata lists labels but the {labelling.LABELS_KEY.decode()!r} record is missing")
        return None
    classes = labelling.class_names(meta) or []
    try:
        indices = labelling.decode(value, length, len(classes), "labels")
    except DataError as exc:
        problems.append(str(exc))
        return None
    histogram = np.bincount(indices, minlength=len(classes)).tolist()
    if labelling.digest(value) != recorded.get("sha256"):
        problems.append("label record hash differs from the one recorded at prepare time")
    if histogram != recorded.get("histogram"):
        problems.append(f"class histogram {histogram} differs from the recorded {recorded.get('histogram')}")
    return {"classes": classes, "histogram": histogram, "origin": recorded.get("origin")}
