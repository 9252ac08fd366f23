"""Raw image collections: a folder tree, a zip, LSUN's own LMDB export, or an existing image LMDB.

A source lists its images once, in a deterministic order (sorted relative paths / sorted keys), and
hands out the *encoded bytes* of image ``i``. Sources hold only paths when pickled and open their
file handles lazily in each process, so ``prepare`` workers and DataLoader workers read in parallel
without sharing a handle across ``fork``.

Fingerprints identify a source cheaply without decoding it: folders hash relative path, size and
mtime of every image; zips hash member name, size and CRC-32 (content-based, straight from the
central directory); LMDBs hash their entry count, keys and data-file size/mtime.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from pathlib import Path

import lmdb
from PIL import Image

from natgan.data import lmdb_format as fmt
from natgan.data.imaging import decode_rgb, read_image_file
from natgan.errors import DataError

class SourceError(DataError):
    """The source path is missing or is not a usable image collection (the CLI then explains the layout)."""


class MissingSourceError(SourceError):
    """No source was given at all: a usage error."""

    exit_code = 2


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm"})


def _is_image_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts if p):
        return False  # hidden files, macOS resource forks inside zips
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


MAX_MEMBER_BYTES = 256 << 20  # an encoded image; FFHQ's 1024x1024 PNGs are about 1.5 MB
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.walk's surrogate escapes of undecodable bytes
        return False
    return True


def printable(text: str) -> str:
    """A path that can be printed and stored in JSON: undecodable bytes shown as ``\\xNN``."""
    return text if _utf8(text) else text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class RawSource:
    """Ordered encoded images. Subclasses set ``layout``, ``path``, ``ignored`` and implement the rest."""

    layout: str = ""
    path: Path
    ignored: int = 0  # files skipped because they are not named like images (LICENSE.txt, *.json)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> bytes:
        raise NotImplementedError

    def image(self, index: int) -> Image.Image:
        """Decoded RGB image ``index`` (raises ``BadImage``/``OSError``); in-memory sources override it."""
        return decode_rgb(self.read(index))

    def label(self, index: int) -> str:
        """Where image ``index`` lives, for error messages and the skipped-files list."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Drop open handles (they are reopened on the next read)."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in [k for k in state if k.startswith("_h")]:
            state[key] = None  # handles never cross a process boundary
        return state


class FolderSource(RawSource):
    """Every image file under a directory, recursively, sorted by relative POSIX path."""

    layout = "folder"

    def __init__(self, path: Path):
        self.path = path
        names, ignored = [], 0
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_root = os.path.relpath(root, path)
            for f in files:
                rel = f if rel_root == "." else f"{rel_root}/{f}".replace(os.sep, "/")
                if _is_image_name(rel):
                    names.append(rel)
                elif not f.startswith("."):
                    ignored += 1
        self.names = sorted(names)
        self.ignored = ignored

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> bytes:
        name = self.names[index]
        if not _utf8(name):
            raise OSError("the file name is not valid UTF-8 (rename the file)")
        path = self.path / name
        if not path.is_file():  # a dangling symlink, a FIFO, a device: never block on or follow it
            raise OSError("a dangling symlink" if path.is_symlink() and not path.exists() else "not a regular file")
        return read_image_file(path)

    def label(self, index: int) -> str:
        return printable(str(self.path / self.names[index]))

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in self.names:
            try:
                st = os.stat(self.path / name)
                stamp = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError as exc:  # dangling symlink, loop: a bad file, reported when it is read
                stamp = f"unreadable {exc.errno}"
            h.update(os.fsencode(name) + f"\0{stamp}\n".encode())
        return "files-sha256:" + h.hexdigest()


class ZipSource(RawSource):
    """Every image member of a zip archive, sorted by member name."""

    layout = "zip"

    def __init__(self, path: Path):
        self.path = path
        self._hzip: zipfile.ZipFile | None = None
        self._pid = os.getpid()
        try:
            infos = self._zip().infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"{path}: not a readable zip archive ({exc})") from None
        members = {i.filename: i for i in infos if not i.is_dir()}
        self.names = sorted(n for n in members if _is_image_name(n))
        self.ignored = sum(1 for n in members if not _is_image_name(n) and not os.path.basename(n).startswith("."))
        self._sizes_crcs = [(members[n].file_size, members[n].CRC) for n in self.names]

    def _zip(self) -> zipfile.ZipFile:
        if self._hzip is None or self._pid != os.getpid():
            self._hzip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._hzip

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> bytes:
        archive = self._zip()
        info = archive.getinfo(self.names[index])
        if info.flag_bits & 0x1:
            raise OSError("encrypted zip member (nat-gan reads unencrypted archives only)")
        if info.compress_type not in _ZIP_METHODS:
            raise OSError(f"zip member compressed with unsupported method {info.compress_type} "
                          f"(use stored or deflate)")
        if info.file_size > MAX_MEMBER_BYTES:  # zipfile stops at the declared size, so this bounds memory
            raise OSError(f"zip member expands to {info.file_size:,} bytes, more than any image "
                          f"({MAX_MEMBER_BYTES:,}); a zip bomb or not an image")
        try:
            return archive.read(info)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
            raise OSError(f"damaged zip member: {exc}") from None  # a damaged member is a bad image

    def label(self, index: int) -> str:
        return f"{self.path}:{self.names[index]}"

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, (size, crc) in zip(self.names, self._sizes_crcs):
            h.update(f"{name}\0{size}\0{crc:08x}\n".encode())
        return "zip-sha256:" + h.hexdigest()

    def close(self) -> None:
        if self._hzip is not None and self._pid == os.getpid():
            self._hzip.close()
        self._hzip = None


class LmdbSource(RawSource):
    """Images stored as LMDB values: LSUN's export (hash keys -> webp/jpeg) or an official/nat-gan LMDB.

    LSUN: every key is an image, in LMDB (sorted) key order. Official/nat-gan (has ``length``): the
    records of its largest size, ``{size}-00000`` ... in index order.
    """

    def __init__(self, path: Path):
        self.path = path
        self._hread: fmt.ReadHandle | None = None
        env = self._env()
        with env.begin() as txn:
            has_length = txn.get(fmt.LENGTH_KEY) is not None
        if has_length:
            count = fmt.read_length(env, path)
            sizes = fmt.scan_sizes(env)
            if not sizes:
                raise DataError(f"{path}: LMDB has a 'length' record but no '{{size}}-{{index}}' images")
            self.layout, self.size = "lmdb", sizes[-1]
            self.keys = [fmt.record_key(self.size, i) for i in range(count)]
        elif fmt.scan_sizes(env):  # '{size}-{index}' records but no 'length': an interrupted build
            raise fmt.incomplete(path)
        else:
            self.layout, self.size = "lsun-lmdb", None
            with env.begin() as txn, txn.cursor() as cur:
                self.keys = [k for k in cur.iternext(keys=True, values=False) if k != fmt.META_KEY]
        self.ignored = 0

    def _env(self) -> lmdb.Environment:
        if self._hread is None:
            self._hread = fmt.ReadHandle(self.path)
        return self._hread.env()

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, index: int) -> bytes:
        key = self.keys[index]
        with self._env().begin() as txn:
            value = txn.get(key)
        if value is None:
            raise DataError(f"{self.path}: missing record {key.decode(errors='replace')!r}")
        return value

    def label(self, index: int) -> str:
        return f"{self.path}[{self.keys[index].decode(errors='replace')}]"

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        data = self.path / "data.mdb"
        st = os.stat(data)
        h.update(f"{len(self.keys)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        for key in self.keys:
            h.update(key + b"\n")
        return "lmdb-sha256:" + h.hexdigest()

    def close(self) -> None:
        if self._hread is not None:
            self._hread.release()
        self._hread = None


def open_raw_source(path: str | os.PathLike) -> RawSource:
    """Pick the reader from what ``path`` is: LMDB directory, zip file, or any other directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceError(f"{p}: no such file or directory")
    if fmt.is_lmdb_dir(p):
        return LmdbSource(p)
    if p.is_dir():
        return FolderSource(p)
    if zipfile.is_zipfile(p):
        return ZipSource(p)
    raise SourceError(f"{p}: not an image folder, a zip archive or an LMDB directory")
