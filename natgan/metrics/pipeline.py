"""Streaming images into a feature extractor, with producing and consuming overlapped.

Generated images go straight from the generator (already quantised to 8 bits) to the extractor; a
background thread produces the next batch while the current one is embedded (on CUDA in its own stream,
so generator and Inception kernels overlap). Dataset images are decoded by DataLoader workers.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from natgan.errors import DataError, NatGanError, unwrap_worker_error
from natgan.sampling.generate import ImageGenerator

Advance = Callable[[int], None]
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(make_items: Callable[[], Iterable], *, depth: int = 2, device: torch.device | None = None) -> Iterator:
    """Iterate ``make_items()`` in a background thread, keeping up to ``depth`` items ready.

    With a CUDA ``device`` the producer runs in a side stream and synchronises it before handing an
    item over; the consumer marks tensors as used by its own stream so their memory is not recycled
    early. Exceptions in the producer re-raise in the consumer; leaving the loop early stops it.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    cuda = device is not None and device.type == "cuda"
    stream = torch.cuda.Stream(device=device) if cuda else None

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.inference_mode(), (torch.cuda.stream(stream) if cuda else _null()):
                for item in make_items():
                    if cuda:
                        stream.synchronize()
                    if not put(item):
                        return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name="natgan-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            if cuda:
                _record_stream(item, torch.cuda.current_stream(device))
            yield item
    finally:
        stop.set()
        thread.join(timeout=60)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _record_stream(item, stream) -> None:
    if isinstance(item, torch.Tensor):
        if item.is_cuda:
            item.record_stream(stream)
    elif isinstance(item, (tuple, list)):
        for part in item:
            _record_stream(part, stream)


def generator_features(gen: ImageGenerator, seeds: Sequence[int], extractor, *, advance: Advance | None = None,
                       overlap: bool = True) -> np.ndarray | dict:
    """Features of the images of ``seeds`` (one row per seed, in order; a dict when ``extractor`` returns one)."""
    def batches():
        return gen.batches(seeds)

    source = prefetch(batches, device=gen.device) if overlap else batches()
    feats = []
    for chunk, images in source:
        feats.append(extractor(images))
        if advance:
            advance(len(chunk))
    return _concat(feats)


class _ImagesAt(Dataset):
    """``src[i]`` (numpy uint8 HxWx3) as uint8 CHW tensors, for the chosen indices."""

    def __init__(self, src, indices: Sequence[int]):
        self.src = src
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        index = int(self.indices[i])
        image = np.asarray(self.src[index])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"{getattr(self.src, 'description', 'dataset')}: image {index} is "
                            f"{image.dtype} {image.shape}, expected uint8 HxWx3")
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def dataset_features(src, indices: Sequence[int], extractor, *, batch_size: int, workers: int = 0,
                     advance: Advance | None = None) -> np.ndarray:
    """Features of ``src[i]`` for ``i`` in ``indices`` (decoding in ``workers`` processes)."""
    from natgan.devices import loader_workers

    workers = loader_workers(workers, getattr(extractor, "device", "cpu"))  # workers + CPU threads <= cores
    # Its own generator: a DataLoader otherwise draws a base seed from the global RNG (the trainer's).
    loader = DataLoader(_ImagesAt(src, indices), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=torch.cuda.is_available(), persistent_workers=False,
                        generator=torch.Generator().manual_seed(0))
    feats = []
    try:
        for images in loader:
            feats.append(extractor(images))
            if advance:
                advance(len(images))
    except NatGanError as exc:
        raise unwrap_worker_error(exc) from None
    except RuntimeError as exc:
        if "stack expects each tensor to be equal size" in str(exc):
            raise DataError(f"{getattr(src, 'description', 'dataset')}: images have different sizes; open it at "
                            f"one resolution") from None
        raise
    return _concat(feats)


def _concat(parts: list) -> np.ndarray | dict:
    """Concatenate per-batch features (arrays, or dicts of arrays from several extractors at once)."""
    if parts and isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts)
