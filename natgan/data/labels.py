"""Class labels of a dataset: where ``prepare`` finds them, how the LMDB stores them, how readers load them.

Sources of labels (``--labels``):

* ``auto`` (default): a stylegan2-ada ``dataset.json`` at the root of the folder or zip, if there is
  one (``{"labels": [[relative_path, int], ...]}``; ``"labels": null`` means unlabelled), else none;
* ``folders``: one sub-folder per class (``root/<class>/...``, ImageNet style); classes are the sorted
  folder names;
* ``FILE.json`` / ``FILE.csv``: a mapping from file names (relative to the source root) to classes.
  JSON is the ``dataset.json`` layout or an object ``{"name": class, ...}``; CSV has two columns
  ``file,class`` (a first row ``file,class`` / ``filename,label`` is a header). Classes are all integers
  (indices; class names are then "0", "1", ...) or all names (sorted; the index is the position);
* ``none``: no labels, even when a ``dataset.json`` is present.

Storage: one record ``__natgan_labels__`` (little-endian int32 per image, in index order) and a
``labels`` entry in the metadata (class names, where they came from, histogram, sha256 of the record).
Official readers ignore both, and a dataset without labels has neither: its bytes are what they were.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from natgan.errors import ConfigError, DataError

LABELS_KEY = b"__natgan_labels__"
DATASET_JSON = "dataset.json"
MAX_LABEL_FILE_BYTES = 1 << 30  # a labels file for tens of millions of images; bounds what is read
SPECS = ("auto", "none", "folders")


@dataclass
class Labels:
    """Per-image class indices (in the source's image order) and the class names."""

    indices: np.ndarray          # int64 [N], each in [0, len(classes))
    classes: list[str]
    origin: str                  # where they came from (shown in the summary and the metadata)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def histogram(self, indices: np.ndarray | None = None) -> list[int]:
        values = self.indices if indices is None else indices
        return np.bincount(values, minlength=self.num_classes).tolist()


def encode(indices: np.ndarray) -> bytes:
    return np.asarray(indices, dtype="<i4").tobytes()


def digest(value: bytes) -> str:
    return "sha256:" + hashlib.sha256(value).hexdigest()


def decode(value: bytes, count: int, num_classes: int, where: str) -> np.ndarray:
    """The stored record -> int64 ``[count]``; DataError naming ``where`` when it does not fit."""
    if len(value) != 4 * count:
        raise DataError(f"{where}: label record holds {len(value) // 4} labels for {count} images")
    out = np.frombuffer(value, dtype="<i4").astype(np.int64)
    if count and (out.min() < 0 or out.max() >= num_classes):
        raise DataError(f"{where}: label record has values outside [0, {num_classes})")
    return out


def metadata(labels: Labels, kept: np.ndarray, value: bytes) -> dict[str, Any]:
    """The metadata entry of the labels actually written (``kept``: one per stored image)."""
    return {"classes": labels.classes, "origin": labels.origin, "histogram": labels.histogram(kept),
            "sha256": digest(value)}


def class_names(meta: dict[str, Any] | None) -> list[str] | None:
    """Class names recorded in a dataset's metadata, None for an unlabelled dataset."""
    if not meta or not isinstance(meta.get("labels"), dict):
        return None
    return [str(c) for c in meta["labels"].get("classes", [])]


# ------------------------------------------------------------------------------------------ resolving

def resolve(source: Any, spec: str | None) -> Labels | None:
    """Labels of ``source`` (a :class:`natgan.data.sources.RawSource`) under ``--labels spec``."""
    spec = "auto" if spec is None else str(spec)
    own = getattr(source, "class_labels", None)
    if callable(own):                   # built-in datasets know their labels (digits)
        if spec == "none":
            return None
        if spec != "auto":
            raise ConfigError(f"--labels {spec}: the {source.layout} dataset has its own labels "
                              f"(use auto or none)")
        return own()
    if spec == "none":
        return None
    names = getattr(source, "names", None)
    if spec == "folders":
        if names is None:
            raise ConfigError(f"--labels folders: {source.path} is not a folder or zip of class sub-folders")
        return _from_folders(names, source.path)
    if spec == "auto":
        text = _dataset_json_text(source)
        if text is None:
            return None
        where = f"{source.path}:{DATASET_JSON}" if getattr(source, "layout", "") == "zip" \
            else str(Path(source.path) / DATASET_JSON)
        pairs = _parse_json(text, where)
        return None if pairs is None else _match(pairs, names or [], where)
    path = Path(spec).expanduser()
    if path.suffix.lower() not in (".json", ".csv"):
        raise ConfigError(f"--labels {spec}: expected auto, none, folders, or a .json / .csv file")
    if names is None:
        raise ConfigError(f"--labels {spec}: label files name images of a folder or zip; {source.path} is neither")
    text = _read_text(path)
    pairs = _parse_json(text, str(path)) if path.suffix.lower() == ".json" else _parse_csv(text, str(path))
    if pairs is None:
        raise DataError(f"{path}: holds no labels (\"labels\": null)")
    return _match(pairs, names, str(path))


def _read_text(path: Path) -> str:
    try:
        if not path.is_file():
            raise DataError(f"{path}: no such labels file")
        if path.stat().st_size > MAX_LABEL_FILE_BYTES:
            raise DataError(f"{path}: larger than {MAX_LABEL_FILE_BYTES:,} bytes, not a labels file")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _dataset_json_text(source: Any) -> str | None:
    layout = getattr(source, "layout", "")
    if layout == "folder":
        path = Path(source.path) / DATASET_JSON
        return _read_text(path) if path.is_file() else None
    if layout == "zip":
        with zipfile.ZipFile(source.path) as zf:
            try:
                info = zf.getinfo(DATASET_JSON)
            except KeyError:
                return None
            if info.file_size > MAX_LABEL_FILE_BYTES:
                raise DataError(f"{source.path}:{DATASET_JSON}: expands to {info.file_size:,} bytes, not a "
                                f"labels file")
            try:
                return zf.read(info).decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{source.path}:{DATASET_JSON}: not UTF-8 text") from None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DataError(f"{source.path}:{DATASET_JSON}: cannot read ({exc})") from None
    return None


def _parse_json(text: str, where: str) -> list[tuple[str, Any]] | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and "labels" in data:
        entries = data["labels"]
        if entries is None:
            return None
        if not isinstance(entries, list):
            raise DataError(f"{where}: \"labels\" must be a list of [file, class] pairs or null")
        pairs = []
        for i, entry in enumerate(entries):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DataError(f"{where}: labels[{i}] is {json.dumps(entry)[:80]}, expected [file, class]")
            pairs.append((entry[0], entry[1]))
        return pairs
    if isinstance(data, dict):
        return list(data.items())
    raise DataError(f"{where}: expected {{\"labels\": [[file, class], ...]}} or {{\"file\": class, ...}}")


def _parse_csv(text: str, where: str) -> list[tuple[str, Any]]:
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(cell.strip() for cell in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["file", "class"], ["filename", "label"],
                                                            ["file", "label"], ["filename", "class"]):
        rows = rows[1:]
    pairs = []
    for line, row in enumerate(rows, 1):
        if len(row) != 2:
            raise DataError(f"{where}: row {line} has {len(row)} columns, expected 2 (file,class)")
        value: Any = row[1].strip()
        if value.lstrip("-").isdigit():
            value = int(value)
        pairs.append((row[0].strip(), value))
    return pairs


def _match(pairs: list[tuple[str, Any]], names: list[str], where: str) -> Labels:
    """File -> class pairs onto the source's image order; every image needs exactly one label."""
    values = [v for _, v in pairs]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if values and min(values) < 0:
            bad = next(f for f, v in pairs if v < 0)
            raise DataError(f"{where}: label of {bad!r} is negative ({min(values)})")
        count = max(values) + 1 if values else 0
        classes = [str(i) for i in range(count)]
        lookup = {str(i): i for i in range(count)}
    elif all(isinstance(v, str) and v for v in values):
        classes = sorted(set(values))
        lookup = {c: i for i, c in enumerate(classes)}
    else:
        first_kind = isinstance(values[0], str)
        bad = next((f, v) for f, v in pairs if isinstance(v, bool) or not isinstance(v, (int, str))
                   or isinstance(v, str) != first_kind or v == "")
        raise DataError(f"{where}: label of {bad[0]!r} is {json.dumps(bad[1])}; labels must be all integers "
                        f"or all class names")
    by_name: dict[str, int] = {}
    for file, value in pairs:
        key = _norm(file)
        if key in by_name:
            raise DataError(f"{where}: {file!r} is labelled twice")
        by_name[key] = lookup[str(value)]
    index = {_norm(n): i for i, n in enumerate(names)}
    missing = [f for f, _ in pairs if _norm(f) not in index]
    if missing:
        raise DataError(f"{where}: names {len(missing)} file(s) that are not images of the dataset, first "
                        f"{missing[0]!r}")
    unlabelled = [n for n in names if _norm(n) not in by_name]
    if unlabelled:
        raise DataError(f"{where}: {len(unlabelled)} image(s) have no label, first {unlabelled[0]!r}")
    indices = np.array([by_name[_norm(n)] for n in names], dtype=np.int64)
    return Labels(indices, classes, os.path.basename(where))


def _norm(name: str) -> str:
    name = name.replace("\\", "/")
    return name[2:] if name.startswith("./") else name


def _from_folders(names: list[str], root: Any) -> Labels:
    top = [n.split("/", 1) for n in names]
    loose = [n for n, parts in zip(names, top) if len(parts) < 2]
    if loose:
        raise DataError(f"{root}: --labels folders needs every image inside a class sub-folder; {len(loose)} lie "
                        f"at the top, first {loose[0]!r}")
    classes = sorted({parts[0] for parts in top})
    lookup = {c: i for i, c in enumerate(classes)}
    return Labels(np.array([lookup[parts[0]] for parts in top], dtype=np.int64), classes,
                  "class sub-folders")


def check_spec(spec: str | None) -> None:
    """``--labels`` must be a keyword or a .json/.csv path (checked before anything is opened)."""
    if spec is None or spec in SPECS:
        return
    if Path(spec).suffix.lower() not in (".json", ".csv"):
        raise ConfigError(f"--labels {spec}: expected auto, none, folders, or a .json / .csv file")


def check_labels(num_classes: int, class_names: list[str] | None, path: object) -> None:
    """A class-conditional model needs a labelled dataset with exactly its number of classes."""
    if not num_classes:
        return
    if class_names is None:
        raise DataError(f"{path}: has no class labels, but model.num_classes = {num_classes} (build the dataset "
                        f"with labels: `nat-gan prepare folder SRC --labels folders|FILE.json|FILE.csv`)")
    if len(class_names) != num_classes:
        raise ConfigError(f"key 'model.num_classes': {num_classes}, but {path} has {len(class_names)} classes "
                          f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''})")
