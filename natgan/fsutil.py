"""Filesystem durability helpers and the output path policy, shared by every writer.

Every file nat-gan publishes (checkpoints, ``latest.pt``, ``recipe.toml``, sample PNGs/zips/npz,
attention maps, cached FID statistics, extractor weights, benchmark JSON) goes through
:class:`AtomicFile`: the bytes go to ``.<name>.tmp-<pid>`` beside the target, are fsynced, renamed over
the target in one step and the directory is fsynced, so a reader (or a crash, or ``kill -9``) sees the
old file or the complete new one, never a torn one. A failed write removes its temp file; temp files
of writers that died without cleaning up (``kill -9``) are removed by the next writer of the same
target, or by :func:`remove_stale_temps` for a whole directory, once their pid is no longer alive.

The path policy (issue 23) lives here too, so every writer obeys it without knowing it:

* a target is replaced only if it is a regular file the owner has not made read-only; a symbolic link,
  device, FIFO, socket or directory under the target's name is refused with one line (a rename would
  replace a link, but a writer that opened the name would write through it, and ``/dev/full`` would
  become a regular file when nat-gan runs as root);
* a command registers the files it reads (:func:`protect_inputs`) and no writer may replace one of them,
  whatever the spelling (``sub/../ckpt.pt``, a symlink, a hard link): :func:`refuse_unsafe_target`;
* a name that comes from a data file (a latents file's ``names``) becomes a path only through
  :func:`plain_name` / :func:`output_in`: one plain component, resolved inside the output folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import stat
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

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


# ----------------------------------------------------------------------------------------- path policy

# (option, path as given, resolved path, (device, inode) or None) of the files the running command reads
_PROTECTED: list[tuple[str, Path, Path, tuple[int, int] | None]] = []
_MAX_NAME = 200
_KINDS = {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFIFO: "FIFO",
          stat.S_IFSOCK: "socket", stat.S_IFDIR: "directory"}


def protect_inputs(*inputs: tuple[str, str | Path | None]) -> None:
    """Register ``(option, path)`` pairs a command reads; no writer may replace them (see module docstring).

    Call :func:`release_inputs` when the command ends (the CLI entry point does)."""
    for option, path in inputs:
        if path is None or str(path) == "":
            continue
        _PROTECTED.append((option, Path(path), *_identity(Path(path))))


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """The resolved path (``..`` and links followed) and, if it exists, (device, inode): hard links too."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError):
        resolved = path.absolute()
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return resolved, None
    return resolved, (st.st_dev, st.st_ino)


def release_inputs() -> None:
    _PROTECTED.clear()


def _usage_error(message: str) -> Exception:
    from natgan.errors import ConfigError

    return ConfigError(message)


def refuse_unsafe_target(path: str | Path, option: str | None = None) -> Path:
    """Raise one line unless ``path`` may be (re)written: absent, or a regular, writable file that is none
    of the inputs registered with :func:`protect_inputs`, by any spelling or link."""
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    if _PROTECTED:
        resolved, ident = _identity(path)
        hit = next(((s, g) for s, g, r, i in _PROTECTED if r == resolved or (ident is not None and i == ident)),
                   None)
        if hit is not None:
            source, given = hit
            raise _usage_error(f"{label}: is the input {source} {given} (an output never replaces what the "
                               f"command reads); choose another output name")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise _usage_error(f"{label}: cannot check the output ({exc.strerror or exc})") from None
    if stat.S_ISLNK(st.st_mode):
        raise _usage_error(f"{label}: is a symbolic link; nat-gan replaces only regular files and never writes "
                           f"through a link (remove it or choose another name)")
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        raise _usage_error(f"{label}: is a {kind}, not a regular file; nat-gan writes only regular files")
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise _usage_error(f"{label}: is read-only (mode {stat.S_IMODE(st.st_mode):04o}); nat-gan does not replace "
                           f"a file its owner protected")
    return path


def check_output_file(path: str | Path, option: str, *inputs: tuple[str, str | Path | None]) -> Path:
    """Refuse (one line, before any work) an output file that may not be written: see
    :func:`refuse_unsafe_target`; ``inputs`` are registered with :func:`protect_inputs` as well."""
    protect_inputs(*inputs)
    return refuse_unsafe_target(path, option)


def plain_name(name: str, source: str) -> str:
    """``name`` if it is one plain file-name component, else a one-line error naming ``source``.

    Why: names stored in data files (a latents file's ``names``) are chosen by whoever made the file;
    ``../victim``, an absolute path or a NUL byte must never decide where nat-gan writes."""
    from natgan.errors import DataError

    text = str(name)
    bad = ("empty" if not text else
           "a path, not a file name" if "/" in text or "\\" in text or text in (".", "..") else
           "control characters" if any(ord(c) < 32 or ord(c) == 127 for c in text) else
           f"longer than {_MAX_NAME} characters" if len(text) > _MAX_NAME else
           "a hidden name" if text.startswith(".") else None)
    if bad:
        raise DataError(f"{source}: name {text[:80]!r} is {bad}; names from files must be plain file names")
    return text


def output_in(outdir: str | Path, name: str, source: str = "output name") -> Path:
    """``outdir/name`` for a ``name`` checked by :func:`plain_name`, and resolved inside ``outdir``."""
    outdir = Path(outdir)
    path = outdir / plain_name(name, source)
    if path.resolve().parent != outdir.resolve():
        raise _usage_error(f"{source}: {name!r} would be written outside {outdir}")
    return path


def _create_new(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)


class AtomicFile:
    """A temp file that becomes ``path`` on :meth:`commit` and disappears on :meth:`abort`.

    Use as a context manager (commit on success, abort on any exception) or drive it by hand when the
    file object is handed to something that streams into it (a ``ZipFile``)."""

    def __init__(self, path: str | Path, mode: str = "wb", **open_kwargs: Any):
        if "w" not in mode:
            raise ValueError("AtomicFile writes a new file: mode must contain 'w'")
        self.path = refuse_unsafe_target(path)
        check_may_write(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path.parent, self.path.name)
        self.tmp = temp_path(self.path)
        if os.path.lexists(self.tmp):  # named for this pid: a leftover (or a planted link), never a live writer
            os.unlink(self.tmp)
        # O_EXCL | O_NOFOLLOW: the temp file is created here, never opened through a link planted in its place
        self.fh: IO[Any] = open(self.tmp, mode, opener=_create_new, **open_kwargs)
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
    source, path = Path(source), refuse_unsafe_target(path)
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


def make_output_dir(path: str | Path, option: str = "--outdir") -> Path:
    """Create an output directory; a clear one-line error when the name is taken by a file."""
    from natgan.errors import ConfigError

    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{option} {path}: a parent of it is a file, not a directory") from None
    return path


# ------------------------------------------------------------------------------------------ overwrite rule
# One rule for every command that writes outputs: an existing file is never replaced unless the user gave
# --overwrite (prepare's --force and train's --start-over are hidden aliases of it). A command states the
# user's choice once with `overwrite_policy(args.overwrite)`; every writer (AtomicFile, the MP4 writer) asks
# `check_may_write` before it creates its temp file, so nothing existing is touched when the answer is no.
# Library calls outside such a scope (notebooks, the trainer's own rotating files) are not restricted.
OVERWRITE_FLAG = "--overwrite"
_OVERWRITE: "contextvars.ContextVar[bool | None]" = contextvars.ContextVar("natgan_overwrite", default=None)


@contextlib.contextmanager
def overwrite_policy(allowed: bool) -> Iterator[None]:
    """Within the block, writers refuse existing targets unless ``allowed`` (the command's --overwrite)."""
    token = _OVERWRITE.set(bool(allowed))
    try:
        yield
    finally:
        _OVERWRITE.reset(token)


def check_may_write(path: str | Path) -> None:
    """ConfigError (exit 2) naming ``path`` when it exists and the current command may not overwrite."""
    from natgan.errors import ConfigError

    if _OVERWRITE.get() is False and os.path.lexists(path):
        raise ConfigError(f"{path}: exists; give {OVERWRITE_FLAG} to replace it (existing files are kept)")


def refuse_existing(paths: Iterable[str | Path]) -> None:
    """Up-front form of :func:`check_may_write` for the outputs a command knows before its work starts (so a
    long run does not end in a refusal): names the first existing one and how many there are."""
    from natgan.errors import ConfigError

    if _OVERWRITE.get() is not False:
        return
    existing = [Path(p) for p in paths if os.path.lexists(p)]
    for path in existing:  # what may never be written (a link, an input, ...) is said first, as the writers do
        if not os.path.isdir(path) or os.path.islink(path):
            refuse_unsafe_target(path)
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(f"{existing[0]}: exists{more}; give {OVERWRITE_FLAG} to replace "
                          f"{'them' if more else 'it'} (existing files are kept)")
