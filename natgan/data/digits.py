"""The built-in default dataset: scikit-learn's handwritten digits (1,797 real 8x8 scans, no download).

The data ships inside scikit-learn (UCI optical digits, ``sklearn/datasets/data/digits.csv.gz``: 16
grey levels, white ink on black). We read that file directly, the way ``load_digits`` does, because
importing scikit-learn costs seconds; ``load_digits`` is the fallback if the file ever moves. Each
image is scaled to 8-bit exactly (``round(v * 255 / 16)``), replicated to RGB and upscaled by the
ordinary ``prepare`` pipeline. The default filter is **bicubic**: smooth strokes instead of the 4x4
blocks of box/nearest, and less ringing than Lanczos on such hard 8-pixel edges. Stored as lossless
PNG (at 32x32 JPEG saves nothing worth its artefacts). Small enough for a StyleNAT to learn on a CPU,
which is what the README's first training command uses.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from natgan.data.labels import Labels
from natgan.data.prepare import prepare_dataset
from natgan.data.progress import ProgressCallback
from natgan.data.sources import RawSource
from natgan.errors import DataError

DEFAULT_SIZE = 32
DEFAULT_FILTER = "bicubic"
DEFAULT_ENCODING = "png"
COUNT = 1797


def _load_digits() -> tuple[np.ndarray, np.ndarray, Path]:
    """``[1797, 8, 8]`` floats in 0..16, the ``[1797]`` digit each shows, and the file they came from."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-learn is not installed (it ships the digits dataset): pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        data = np.loadtxt(path, delimiter=",")
        if data.shape == (COUNT, 65):
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64), path
    from sklearn.datasets import load_digits  # layout changed: ask scikit-learn itself

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64), path


class DigitsSource(RawSource):
    """The digits as 8x8 images in scikit-learn's order (decoded in memory, no files)."""

    layout = "sklearn-digits"

    def __init__(self) -> None:
        images, self.targets, self.path = _load_digits()
        self.pixels = np.rint(images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        self.sklearn_version = importlib.metadata.version("scikit-learn")
        self.ignored = 0

    def __len__(self) -> int:
        return len(self.pixels)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.pixels[index]).convert("RGB")

    def read(self, index: int) -> bytes:
        return self.pixels[index].tobytes()  # raw 8x8 grey; ``image`` is what the pipeline uses

    def label(self, index: int) -> str:
        return f"sklearn digits[{index}]"

    def fingerprint(self) -> str:
        return "digits-sha256:" + hashlib.sha256(self.pixels.tobytes()).hexdigest()

    def class_labels(self) -> Labels:
        """The digit each image shows: 10 classes named "0" ... "9" (what the conditional demo learns)."""
        return Labels(self.targets.copy(), [str(d) for d in range(10)], "scikit-learn digits targets")


def prepare_digits(out: str | os.PathLike = "digits.lmdb", *, sizes: str | int | Sequence[int] = DEFAULT_SIZE,
                   encoding: str = DEFAULT_ENCODING, filter: str = DEFAULT_FILTER, force: bool = False,
                   progress: bool = True, max_images: int | None = None,
                   on_progress: ProgressCallback | None = None, labels: str | None = None) -> dict[str, Any]:
    """Write the digits LMDB (default 32x32 RGB PNG, with the 10 digit labels unless ``labels="none"``)
    and return ``prepare_dataset``'s result dict."""
    return prepare_dataset(DigitsSource(), out, dataset="digits", sizes=sizes, encoding=encoding, filter=filter,
                           workers=0, max_images=max_images, force=force, progress=progress,
                           on_progress=on_progress, labels=labels)
