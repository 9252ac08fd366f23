"""Filesystem durability helpers shared by every writer that promises "complete or absent".

Every file nat-gan publishes (checkpoints, ``latest.pt``, ``recipe.toml``, sample PNGs/zips/npz,
attention maps, cached FID statistics, extractor weights, benchmark JSON) goes through
:class:`AtomicFile`: the bytes go to ``.<name>.tmp-<pid>`` beside the target, are fsynced, renamed over
the target in one step and the directory is fsynced, so a reader (or a crash, or ``kill -9``) sees the
old file or the complete new one, never a torn one. A failed write removes its temp file; temp files
of writers that died without cleaning up (``kill -9``) are removed by the next writer of the same
target, or by :func:`remove_stale_temps` for a whole directory, once their pid is no longer alive.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, Any, Callable

TEMP_RE = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)$")


def fsync_dir(path: str | Path) -> None:
    """Make a rename durable (POSIX: the directory entry lives in the parent's data)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: str | Path, pid: int | None = None) -> Path:
    """The temp name a writer of ``path`` uses: hidden, beside it (same filesystem), carrying the pid."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (a pid we may not signal still exists)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def remove_stale_temps(directory: str | Path, target: str | None = None) -> list[Path]:
    """Delete temp files in ``directory`` (of ``target`` only, if given) whose writer is dead."""
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_RE.match(entry.name)
        if not m or (target is not None and m.group("target") != target):
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except (IsADirectoryError, FileNotFoundError, PermissionError):
            continue
    return removed


class AtomicFile:
    """A temp file that becomes ``path`` on :meth:`commit` and disappears on :meth:`abort`.

    Use as a context manager (commit on success, abort on any exception) or drive it by hand when the
    file object is handed to something that streams into it (a ``ZipFile``)."""

    def __init__(self, path: str | Path, mode: str = "wb", **open_kwargs: Any):
        if "w" not in mode:
            raise ValueError("AtomicFile writes a new file: mode must contain 'w'")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path.parent, self.path.name)
        self.tmp = temp_path(self.path)
        self.fh: IO[Any] = open(self.tmp, mode, **open_kwargs)
        self.done = False

    def commit(self) -> Path:
        """fsync the data, rename it over the target, fsync the directory."""
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.done = True
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Close and delete the temp file (no-op after a commit)."""
        if self.done:
            return
        self.done = True
        try:
            self.fh.close()
        except (OSError, ValueError):
            pass
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> IO[Any]:
        return self.fh

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` and publish the result at ``path`` atomically."""
    target = AtomicFile(path, "wb")
    with target as fh:
        write(fh)
    return target.path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_link(source: str | Path, path: str | Path) -> Path:
    """Make ``path`` a hard link to ``source`` atomically (a copy where hard links are unsupported)."""
    source, path = Path(source), Path(path)
    remove_stale_temps(path.parent, path.name)
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        return atomic_write(path, lambda fh: fh.write(source.read_bytes()))
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """True if ``a`` and ``b`` name the same file or directory: resolved paths (``..``, symlinks) or inodes."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_output_dir(path: str | Path, option: str = "--outdir") -> Path:
    """Refuse (one line) an output directory whose name is taken by a file, before any work starts."""
    from natgan.errors import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a directory")
    return path


def check_output_file(path: str | Path, option: str, *, inputs: tuple[str | Path | None, ...] = ()) -> Path:
    """Refuse (one line, before any work) an output file named '' or taken by a directory, or one that is
    one of the command's own ``inputs`` (``bench --recipe r.toml --output r.toml``)."""
    from natgan.errors import ConfigError

    if not str(path).strip():
        raise ConfigError(f"{option} '': expected a file name")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file name")
    for source in inputs:
        if source is not None and path.exists() and same_file(path, source):
            raise ConfigError(f"{option} {path}: is also an input of this command ({source}); writing it would "
                              f"destroy it")
    return path


def make_output_dir(path: str | Path, option: str = "--outdir") -> Path:
    """Create an output directory; a clear one-line error when the name is taken by a file."""
    from natgan.errors import ConfigError

    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{option} {path}: a parent of it is a file, not a directory") from None
    return path
