"""``open_dataset``: read-only, random access to square RGB images from any dataset nat-gan accepts.

* nat-gan or official LMDB (``length`` + ``{size}-{index:05d}`` records): served as stored. Without
  ``resolution`` the largest stored size is served; a missing size is a DataError listing the sizes.
* image folder (nested), zip, or LSUN's raw LMDB export: decoded and, when needed, resized as
  ``prepare`` would (shorter side to ``resolution``, centre crop, Lanczos by default). Without
  ``resolution`` the shorter side of the first image (in sorted order) is used for all images.

``content_hash`` identifies what is served (used to cache FID reference statistics):
* our LMDBs: the stored per-size hash (``sha256:``, see :mod:`natgan.data.hashing`);
* official LMDBs: ``sampled-sha256:`` over ``length``, the size and the bytes of up to 256 evenly
  spaced records (a full hash of FFHQ-1024 would read ~90 GB on every open; ``prepare check``
  hashes everything);
* folders/zips/LSUN: ``<layout>-sha256:`` over the source fingerprint (folders: relative path, size,
  mtime of each image; zips: name, size, CRC-32; see :mod:`natgan.data.sources`), resolution and filter.

Handles are opened lazily and re-opened after ``fork``, so one source object can be shared with
DataLoader workers.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from natgan.data import imaging
from natgan.data import labels as labelling
from natgan.data import lmdb_format as fmt
from natgan.data.sources import LmdbSource, RawSource, open_raw_source
from natgan.errors import DataError

SAMPLED_RECORDS = 256
_PARTIAL = re.compile(r"\.(partial|replaced)-\d+$")


class ImageSource:
    """``len(src)``, ``src[i]`` -> uint8 ``[R, R, 3]``, ``src.resolution``, ``content_hash``, ``description``."""

    path: Path
    resolution: int
    content_hash: str
    description: str
    metadata: dict[str, Any] | None = None
    labels: np.ndarray | None = None        # int64 [N] class per image, None when unlabelled
    class_names: list[str] | None = None    # names of classes 0..K-1, None when unlabelled

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return index

    def close(self) -> None:
        """Release file handles (reads re-open them)."""

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class LmdbImageSource(ImageSource):
    """A prepared LMDB (nat-gan or official layout) at one of its stored sizes."""

    def __init__(self, path: Path, resolution: int | None = None):
        self.path = path
        self._handle: fmt.ReadHandle | None = fmt.ReadHandle(path)
        try:
            with fmt.damage_as_data_error(path):
                self._validate(self._handle.env(), resolution)
        except BaseException:
            self.close()
            raise

    def _validate(self, env: lmdb.Environment, resolution: int | None) -> None:
        path = self.path
        self.length = fmt.read_length(env, path)
        self.metadata = fmt.read_meta(env, path)
        sizes = [int(s) for s in self.metadata["sizes"]] if self.metadata else fmt.scan_sizes(env)
        self.sizes = sorted(sizes)
        if self.metadata and int(self.metadata["count"]) != self.length:
            raise DataError(f"{path}: metadata says {self.metadata['count']} images but 'length' is {self.length}")
        if not self.sizes or self.length <= 0:
            raise DataError(f"{path}: LMDB holds no images")
        if resolution is None:
            resolution = self.sizes[-1]
        if resolution not in self.sizes:
            raise DataError(f"{path}: no {resolution}x{resolution} images; available sizes: "
                            f"{', '.join(map(str, self.sizes))}")
        self.resolution = int(resolution)
        with env.begin() as txn:
            for i in (0, self.length - 1):
                if txn.get(fmt.record_key(self.resolution, i)) is None:
                    raise DataError(f"{path}: record {fmt.record_key(self.resolution, i).decode()!r} is missing "
                                    f"('length' says {self.length}): incomplete or damaged LMDB")
        self.content_hash = self._content_hash()
        self.description = self._describe()
        self.class_names = labelling.class_names(self.metadata)
        if self.class_names is not None:
            with env.begin() as txn:
                value = txn.get(labelling.LABELS_KEY)
            if value is None:
                raise DataError(f"{path}: metadata lists labels but the label record is missing; rebuild it "
                                f"with `nat-gan prepare ... --force`")
            self.labels = labelling.decode(value, self.length, len(self.class_names), str(path))
            self.description += f", {len(self.class_names)} classes"

    def _open(self) -> lmdb.Environment:
        if self._handle is None:  # closed, or unpickled in a spawned worker: take a handle again
            self._handle = fmt.ReadHandle(self.path)
        return self._handle.env()

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}  # spawn-started workers open their own handle

    def read_bytes(self, index: int) -> bytes:
        """The stored (encoded) record of image ``index`` at this source's resolution."""
        key = fmt.record_key(self.resolution, self._check_index(index))
        with fmt.damage_as_data_error(self.path), self._open().begin() as txn:
            value = txn.get(key)
        if value is None:
            raise DataError(f"{self.path}: record {key.decode()!r} is missing")
        return value

    def __getitem__(self, index: int) -> np.ndarray:
        data = self.read_bytes(index)
        try:
            return imaging.decode_array(data)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a damaged record
            raise DataError(f"{self.path}: record {fmt.record_key(self.resolution, index).decode()!r} does not "
                            f"decode ({exc})") from None

    def _content_hash(self) -> str:
        if self.metadata:
            size_hashes = self.metadata.get("size_hashes", {})
            if str(self.resolution) in size_hashes:
                return size_hashes[str(self.resolution)]
        h = hashlib.sha256(f"{self.length}\t{self.resolution}\n".encode())
        step = max(1, self.length // SAMPLED_RECORDS)
        with self._open().begin() as txn:
            for i in range(0, self.length, step)[:SAMPLED_RECORDS]:
                value = txn.get(fmt.record_key(self.resolution, i)) or b""
                h.update(hashlib.sha256(value).digest())
        return "sampled-sha256:" + h.hexdigest()

    def _describe(self) -> str:
        n = f"{self.length:,} images at {self.resolution}x{self.resolution}"
        if self.metadata:
            m = self.metadata
            return (f"{self.path} (nat-gan LMDB v{m['format_version']}, {m['dataset']}: {n}, {m['encoding']}, "
                    f"{m['resize']['filter']} resize)")
        return f"{self.path} (official-layout LMDB, no metadata: {n})"

    def close(self) -> None:
        if self._handle is not None:
            self._handle.release()
        self._handle = None


class FileImageSource(ImageSource):
    """Images decoded from a folder, zip or LSUN LMDB, resized like ``prepare`` when needed."""

    def __init__(self, raw: RawSource, resolution: int | None = None, filter: str = "lanczos"):
        self.raw, self.path = raw, raw.path
        self.filter, self._resample = filter, imaging.check_filter(filter)
        if len(raw) == 0:
            raise DataError(f"{raw.path}: no images found")
        if resolution is None:
            resolution = min(self._decode(0).size)
        self.mixed_sizes = self._sampled_sizes()
        self.resolution = int(resolution)
        h = hashlib.sha256(f"{raw.fingerprint()}\n{self.resolution}\n{filter}\n".encode())
        self.content_hash = f"{raw.layout}-sha256:" + h.hexdigest()
        self.description = (f"{raw.path} ({raw.layout}: {len(raw):,} images, served at "
                            f"{self.resolution}x{self.resolution}, shorter-side {filter} resize + centre crop)")
        if self.mixed_sizes:
            self.description += f"; mixed sizes ({', '.join(self.mixed_sizes)}), all served at that size"
        found = labelling.resolve(raw, "auto")  # a stylegan2-ada dataset.json, as its own loader reads it
        if found is not None:
            self.labels, self.class_names = found.indices, found.classes
            self.description += f", {found.num_classes} classes from {found.origin}"

    SIZE_SAMPLE = 64

    def _sampled_sizes(self) -> list[str]:
        """Sizes (``WxH``) among up to :data:`SIZE_SAMPLE` evenly spaced images, when they differ, else [].

        Why: every image is served at one size (the given one, else the first image's); a folder of mixed
        sizes is then not scored as each image would be on its own, and the score must say so. Only the headers
        are parsed (no decode), so this costs a few file reads, not a pass over the folder."""
        from PIL import Image, UnidentifiedImageError

        n = len(self.raw)
        k = min(n, self.SIZE_SAMPLE)
        picks = sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})
        sizes = set()
        for i in picks:
            try:
                with Image.open(io.BytesIO(self.raw.read(i))) as im:
                    sizes.add(im.size)
            except (OSError, UnidentifiedImageError, ValueError, DataError):
                continue  # unreadable files are reported where they are read
        return [f"{w}x{h}" for w, h in sorted(sizes)] if len(sizes) > 1 else []

    def _decode(self, index: int):
        try:
            return self.raw.image(index)
        except imaging.BadImage as exc:
            raise DataError(f"{self.raw.label(index)}: unreadable image ({exc})") from None
        except OSError as exc:
            raise DataError(f"{self.raw.label(index)}: cannot read ({exc})") from None

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> np.ndarray:
        img = imaging.resize_square(self._decode(self._check_index(index)), self.resolution, self._resample)
        return np.array(img)  # writable, so torch.from_numpy can share it

    def close(self) -> None:
        self.raw.close()


def open_dataset(path: str | os.PathLike, resolution: int | None = None) -> ImageSource:
    """Open any dataset nat-gan reads; DataError for a missing path, a missing size or an incomplete build."""
    p = Path(path).expanduser()
    if _PARTIAL.search(p.name):
        raise DataError(f"{p}: a partial build (interrupted or still running), not a dataset")
    if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
        raise DataError(f"resolution {resolution!r}: must be a positive integer")
    if fmt.is_lmdb_dir(p):
        handle = fmt.ReadHandle(p)
        try:
            env = handle.env()
            with fmt.damage_as_data_error(p), env.begin() as txn:
                has_length = txn.get(fmt.LENGTH_KEY) is not None
                empty = txn.stat()["entries"] == 0
            sized = fmt.scan_sizes(env)
        finally:
            handle.release()
        if has_length:
            return LmdbImageSource(p, resolution)
        if sized or empty:  # '{size}-{i}' records without 'length': a build that never finished
            raise fmt.incomplete(p)
        return FileImageSource(LmdbSource(p), resolution)  # LSUN's raw export: hash keys -> images
    return FileImageSource(open_raw_source(p), resolution)
