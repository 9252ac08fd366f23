"""``prepare_dataset``: any image source -> an LMDB in the official multi-size layout, fast and safely.

Pipeline: the source lists its images in a deterministic order; worker processes (``--workers``)
read, decode, resize (shorter side + centre crop, :mod:`natgan.data.imaging`) and encode each image
for every size and hash the records; the parent receives results *in index order* (``Pool.imap``),
writes them in large transactions and feeds the content hash. Unreadable images stop the run with
their path, or are listed and skipped with ``skip_bad``; skipped images take no index, so indices
stay contiguous. Interruption safety and ``--overwrite`` are the builder's job (:mod:`natgan.data.writer`).

Re-running is idempotent: if ``out`` already holds a nat-gan LMDB built from the same source
(fingerprint) with the same options, nothing is rebuilt and the result says ``up-to-date``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from natgan import __version__
from natgan.data import catalog, imaging
from natgan.data import labels as labelling
from natgan.data import lmdb_format as fmt
from natgan.data.hashing import SizeHasher, dataset_hash, record_digest
from natgan.data.parallel import OrderedMap
from natgan.data.progress import ProgressBar, ProgressCallback
from natgan.data.sources import IMAGE_EXTENSIONS, MissingSourceError, RawSource, SourceError, open_raw_source
from natgan.fsutil import same_file
from natgan.data.writer import BATCH_IMAGES, LmdbBuilder, check_replaceable, tidy_leftovers
from natgan.errors import ConfigError, DataError

DATASETS = ("ffhq", "church", "folder", "digits")
MIN_SIZE, MAX_SIZE = 4, 8192


# ---------------------------------------------------------------- per-image work (runs in workers)

class Transcoder:
    """Image ``index`` of ``source`` -> encoded records for every size (picklable; one per worker)."""

    def __init__(self, source: RawSource, sizes: Sequence[int], filter: str, encoding: str, quality: int):
        self.source, self.sizes = source, tuple(sizes)
        self.resample = imaging.check_filter(filter)
        self.encoding, self.quality = encoding, quality

    def setup_worker(self) -> None:
        """Runs once in each worker process (see :class:`OrderedMap`)."""
        imaging.cache_image_memory()

    def __call__(self, index: int) -> tuple[int, list[bytes] | None, list[str] | None, str | None, bool]:
        """``(index, values, digests, error, upscaled)``; ``error`` is set for an unreadable image."""
        try:
            img = self.source.image(index)
        except imaging.BadImage as exc:
            return index, None, None, str(exc), False
        except OSError as exc:
            return index, None, None, f"cannot read ({exc})", False
        values = [imaging.encode(imaging.resize_square(img, s, self.resample), self.encoding, self.quality)
                  for s in self.sizes]
        return index, values, [record_digest(v) for v in values], None, min(img.size) < max(self.sizes)


# ---------------------------------------------------------------- option checking

def parse_sizes(sizes: str | int | Sequence[int]) -> list[int]:
    """``"256,1024"`` / ``256`` / ``[256, 1024]`` -> sorted unique sizes, or a ConfigError naming the value."""
    if isinstance(sizes, int):
        items: list[Any] = [sizes]
    elif isinstance(sizes, str):
        items = [s.strip() for s in sizes.split(",") if s.strip()]
    else:
        items = list(sizes)
    out = set()
    for item in items:
        try:
            size = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"--sizes: {item!r} is not an integer (expected e.g. 256,1024)") from None
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ConfigError(f"--sizes: {size} is out of range [{MIN_SIZE}, {MAX_SIZE}]")
        out.add(size)
    if not out:
        raise ConfigError("--sizes: give at least one size (e.g. 256 or 256,1024)")
    return sorted(out)


def default_workers() -> int:
    """One encoder process per core this process may use (the main process mostly waits on them)."""
    from natgan.devices import usable_cores

    return usable_cores()


def _check_options(dataset: str, encoding: str, filter: str, workers: int | None, max_images: int | None,
                   quality: int) -> int:
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    if encoding not in imaging.ENCODINGS:
        raise ConfigError(f"--encoding {encoding!r}: expected one of {', '.join(imaging.ENCODINGS)}")
    if filter not in imaging.FILTERS:
        raise ConfigError(f"--filter {filter!r}: expected one of {', '.join(imaging.FILTERS)}")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max-images {max_images}: must be at least 1")
    if not 1 <= quality <= 100:
        raise ConfigError(f"jpeg quality {quality}: must be in [1, 100]")
    if workers is None:
        return default_workers()
    return check_workers(workers)


MAX_WORKERS_PER_CORE = 4  # decoding is CPU-bound: more processes than this only cost memory (~100 MB each)


def check_workers(workers: int) -> int:
    """``--workers N`` bounded: 0 (none) up to a few per core; 100,000 processes would exhaust memory."""
    limit = MAX_WORKERS_PER_CORE * default_workers()
    if not 0 <= workers <= limit:
        raise ConfigError(f"--workers {workers}: expected 0 (no worker processes) to {limit} "
                          f"({MAX_WORKERS_PER_CORE} per core available here)")
    return workers


# ---------------------------------------------------------------- the command

def _request(dataset: str, source: RawSource, fingerprint: str, sizes: list[int], filter: str, encoding: str,
             quality: int, max_images: int | None, skip_bad: bool) -> dict[str, Any]:
    """Everything that determines the output; equal requests give identical records."""
    return {"dataset": dataset, "source_layout": source.layout, "source_fingerprint": fingerprint,
            "sizes": sizes, "filter": filter, "encoding": encoding,
            "jpeg_quality": quality if encoding == "jpeg" else None, "max_images": max_images,
            "skip_bad": skip_bad}


def _existing_result(out: Path, request: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """Up-to-date result for an identical earlier build; None to build; DataError if we may not."""
    if not (out.exists() or out.is_symlink()):
        return None
    meta = None
    if fmt.is_lmdb_dir(out):
        try:
            handle = fmt.ReadHandle(out)
            try:
                fmt.read_length(handle.env(), out)
                meta = fmt.read_meta(handle.env(), out)
            finally:
                handle.release()
        except DataError:
            meta = None
    if meta is not None and meta.get("request") == request and not force:
        return {**_result_from_meta(out, meta), "status": "up-to-date"}
    if not force:
        if meta is not None:
            before = meta.get("request", {})
            changed = [k for k in request if before.get(k) != request[k]]
            what = f"a nat-gan LMDB built with a different {', '.join(changed)}"
        else:
            what = "not a nat-gan LMDB" if fmt.is_lmdb_dir(out) else "in the way"
        raise ConfigError(f"{out}: already exists ({what}); pass --overwrite to replace it")
    check_replaceable(out)
    return None


def _result_from_meta(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {"out": str(out), "dataset": meta["dataset"], "source": meta["source"]["path"],
            "count": meta["count"], "sizes": meta["sizes"], "encoding": meta["encoding"],
            "jpeg_quality": meta.get("jpeg_quality"), "filter": meta["resize"]["filter"],
            "skipped": meta["skipped"], "ignored_files": meta["ignored_files"],
            "upscaled": meta.get("upscaled", 0), "content_hash": meta["content_hash"],
            "warnings": meta.get("warnings", []), "seconds": meta.get("seconds"),
            "images_per_s": meta.get("images_per_s"), "bytes": meta.get("bytes"),
            **({"labels": meta["labels"]} if "labels" in meta else {})}


def prepare_dataset(src: str | os.PathLike | RawSource | None, out: str | os.PathLike, *, dataset: str = "folder",
                    sizes: str | int | Sequence[int] | None = None, encoding: str = "jpeg", filter: str = "lanczos",
                    workers: int | None = None, max_images: int | None = None, skip_bad: bool = False,
                    force: bool = False, progress: bool = True, on_progress: ProgressCallback | None = None,
                    jpeg_quality: int = imaging.JPEG_QUALITY, batch_images: int = BATCH_IMAGES,
                    labels: str | None = None) -> dict[str, Any]:
    """Build ``out`` (an LMDB directory) from ``src`` and return a result dict (see the CLI / ``--json``).

    ``dataset`` selects validation and defaults: ``ffhq``/``church`` explain where the data comes
    from when ``src`` is missing or wrong; ``folder`` takes any collection. ``sizes`` defaults to the
    dataset's usual size (256). ``workers=0`` transcodes in this process. ``labels`` says where class
    labels come from (:mod:`natgan.data.labels`: auto / none / folders / a .json or .csv file).
    """
    workers = _check_options(dataset, encoding, filter, workers, max_images, jpeg_quality)
    labelling.check_spec(labels)
    guide = catalog.GUIDES.get(dataset)
    size_list = parse_sizes(sizes if sizes is not None else (guide.default_sizes if guide else 256))
    out_path = Path(out).expanduser().absolute()

    source = _open_checked(src, dataset)
    if same_file(source.path, out_path):
        raise ConfigError(f"--out {out_path}: is the source itself; choose another output path")
    fingerprint = source.fingerprint()
    found = labelling.resolve(source, labels)
    request = _request(dataset, source, fingerprint, size_list, filter, encoding, jpeg_quality, max_images, skip_bad)
    if found is not None:  # only labelled datasets carry the key: unlabelled requests are what they were
        request["labels"] = {"origin": found.origin, "classes": found.classes,
                             "sha256": labelling.digest(labelling.encode(found.indices))}
    leftovers = {"leftovers": found_left} if (found_left := tidy_leftovers(out_path)) else {}
    existing = _existing_result(out_path, request, force)
    if existing is not None:
        return {**existing, **leftovers}

    transcoder = Transcoder(source, size_list, filter, encoding, jpeg_quality)
    candidates = len(source)
    workers = min(workers, candidates)
    target = min(candidates, max_images) if max_images else candidates
    hashers = {s: SizeHasher() for s in size_list}
    skipped: list[dict[str, str]] = []
    kept: list[int] = []  # the label of every stored image, in index order
    count = upscaled = 0
    start = time.perf_counter()
    source.close()  # workers open their own handles; the parent re-opens lazily if it transcodes
    chunk = max(1, min(16, candidates // (max(workers, 1) * 16)))
    # pool first: it must fork before the progress bar starts its refresh thread
    with OrderedMap(transcoder, range(candidates), workers, chunk) as results, \
            LmdbBuilder(out_path, force=force, batch_images=batch_images) as builder, \
            ProgressBar(target, f"prepare {dataset}", enabled=progress, callback=on_progress) as bar:
        try:
            for index, values, digests, error, was_upscaled in results:
                if error is not None:
                    if not skip_bad:
                        raise DataError(f"{source.label(index)}: unreadable image ({error}); "
                                        f"pass --skip-bad to skip such files")
                    skipped.append({"path": source.label(index), "error": error})
                    if candidates - len(skipped) < target:
                        bar.set_total(candidates - len(skipped))
                    continue
                for size, value, digest in zip(size_list, values, digests):
                    key = fmt.record_key(size, count)
                    builder.add(key, value)
                    hashers[size].add(key, digest)
                builder.end_image()
                if found is not None:
                    kept.append(int(found.indices[index]))
                count += 1
                upscaled += was_upscaled
                bar.advance()
                if count == target:
                    break
        finally:
            results.close()  # stops the pool now, also when we broke out early at --max-images
            source.close()
        if count == 0:
            raise DataError(f"{source.path}: no readable images ({len(skipped)} skipped)")
        seconds = time.perf_counter() - start
        size_hashes = {s: h.hexdigest() for s, h in hashers.items()}
        warnings = _warnings(dataset, guide, candidates, count, upscaled, size_list, max_images)
        meta = {
            "format": fmt.FORMAT_NAME, "format_version": fmt.FORMAT_VERSION, "natgan_version": __version__,
            "dataset": dataset, "request": request,
            "source": {"path": str(source.path.absolute()), "layout": source.layout, "fingerprint": fingerprint,
                       "candidates": candidates},
            "count": count, "sizes": size_list,
            "resize": {"method": "shorter-side+center-crop", "filter": filter},
            "encoding": encoding, "jpeg_quality": jpeg_quality if encoding == "jpeg" else None,
            "content_hash": dataset_hash(size_hashes),
            "size_hashes": {str(s): h for s, h in size_hashes.items()},
            "skipped": skipped, "ignored_files": source.ignored, "upscaled": upscaled, "warnings": warnings,
            "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 2) if seconds > 0 else None,
            "bytes": builder.bytes_written,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if found is not None:
            value = labelling.encode(np.array(kept))
            builder.add(labelling.LABELS_KEY, value)
            meta["labels"] = labelling.metadata(found, np.array(kept, dtype=np.int64), value)
        builder.finish(count, meta)
    return {**_result_from_meta(out_path, meta), "status": "built", **leftovers}


def _open_checked(src: str | os.PathLike | RawSource | None, dataset: str) -> RawSource:
    if isinstance(src, RawSource):
        source = src
    else:
        if src is None or str(src) == "":
            raise MissingSourceError(f"{dataset}: no source given (pass the dataset folder, zip or LMDB as SRC)")
        source = open_raw_source(src)
    if len(source) == 0:
        inside = _lmdb_in_zip(source)
        if inside:
            raise SourceError(f"{source.path}: holds an LMDB ({inside}), not images; unzip it and pass the "
                              f"directory that contains data.mdb")
        raise SourceError(f"{source.path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return source


def _lmdb_in_zip(source: RawSource) -> str | None:
    if source.layout != "zip":
        return None
    import zipfile

    with zipfile.ZipFile(source.path) as zf:
        return next((n for n in zf.namelist() if n.endswith("data.mdb")), None)


def _warnings(dataset: str, guide: catalog.DatasetGuide | None, candidates: int, count: int, upscaled: int,
              sizes: list[int], max_images: int | None) -> list[str]:
    warnings = []
    if guide and guide.expected_count and candidates != guide.expected_count and not max_images:
        warnings.append(f"found {candidates:,} images; the full {guide.name} set has {guide.expected_count:,}")
    if upscaled and dataset != "digits":  # digits are 8x8 by nature; upscaling is the point
        warnings.append(f"{upscaled:,} images were smaller than {max(sizes)} px on their shorter side and were "
                        f"upscaled")
    return warnings
