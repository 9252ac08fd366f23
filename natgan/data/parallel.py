"""``OrderedMap``: run a picklable callable over items in worker processes, results in input order.

Used by ``prepare`` and ``check``. The callable is shipped once per worker (pool initializer), not
once per item (its optional ``setup_worker()`` runs there too), and the pool starts in the constructor,
i.e. before the caller starts any thread (rich's progress-bar refresh thread). Start method: ``fork``
while the caller is single-threaded (instant start; workers never touch inherited LMDB/zip handles
because sources re-open per process id); otherwise ``forkserver``, which is thread-safe but makes each
worker re-import the caller's ``__main__`` (seconds when that imports torch).
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any, Callable, Iterable, Iterator

_worker_fn: Callable[[Any], Any] | None = None


def _init(fn: Callable[[Any], Any]) -> None:
    """Pool initializer: keep ``fn`` and run its optional ``setup_worker()`` (per-process tuning)."""
    global _worker_fn
    _worker_fn = fn
    setup = getattr(fn, "setup_worker", None)
    if setup is not None:
        setup()


def _call(item: Any) -> Any:
    assert _worker_fn is not None
    return _worker_fn(item)


def _context():
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class OrderedMap:
    """``map(fn, items)`` over ``workers`` processes (inline when ``workers <= 0``); an iterator.

    ``close()`` (also on ``with`` exit) terminates the pool at once, so ``--max-images`` and errors
    never wait for queued work.
    """

    def __init__(self, fn: Callable[[Any], Any], items: Iterable[Any], workers: int, chunksize: int = 1):
        self._pool = None
        if workers <= 0:
            self._it: Iterator[Any] = map(fn, items)
        else:
            self._pool = _context().Pool(workers, initializer=_init, initargs=(fn,))
            self._it = self._pool.imap(_call, items, chunksize=chunksize)

    def __iter__(self) -> "OrderedMap":
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "OrderedMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
