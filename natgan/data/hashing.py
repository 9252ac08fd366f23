"""Content hashes of prepared LMDBs, defined so workers can hash records in parallel.

Per size: ``sha256`` over the lines ``"{key}\\t{sha256(value)}\\n"`` in index order. Whole dataset:
``sha256`` over ``"{size}\\t{size_hash}\\n"`` for the sizes in ascending order. ``prepare`` stores
both; ``check`` recomputes them from the records; ``open_dataset(...).content_hash`` returns the hash
of the size it serves, so FID reference statistics can be cached per (content, resolution).
"""

from __future__ import annotations

import hashlib

PREFIX = "sha256:"


def record_digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


class SizeHasher:
    """Accumulates one size's records, fed in index order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, key: bytes, digest: str) -> None:
        self._h.update(key + b"\t" + digest.encode() + b"\n")

    def hexdigest(self) -> str:
        return PREFIX + self._h.hexdigest()


def dataset_hash(size_hashes: dict[int, str]) -> str:
    h = hashlib.sha256()
    for size in sorted(size_hashes):
        h.update(f"{size}\t{size_hashes[size]}\n".encode())
    return PREFIX + h.hexdigest()
