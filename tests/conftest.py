"""Shared pytest setup: a hermetic, load-independent test session.

Hermetic: for the whole session HOME, XDG_CACHE_HOME, TORCH_HOME and NATGAN_CACHE_DIR point into one
temporary folder (removed at the end), NATGAN_OFFLINE is set (the weights locator never downloads), the
weights/Inception overrides of the user's shell are dropped, and in this process every download and
every non-loopback socket connection raises. A test that needs weights builds them in ``tmp_path``.
Subprocesses the tests start inherit the environment, so they are offline and home-less too.

Load-independent: torch runs ONE intra-op thread here and in every subprocess (NATGAN_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS = 1). Many tests compare results bit for bit (resume, seeds,
projection); with several threads, reductions may be split differently from one call to the next
(MKL picks its team size dynamically, and a busy machine changes what it picks), so last bits would
depend on the load. One thread is also the fastest setting for tiny models on a busy 2-core box.
Tests of the thread policy itself set their counts explicitly and put them back.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

_SANDBOX = Path(tempfile.mkdtemp(prefix="natgan-tests-"))
_ENV = {
    "HOME": str(_SANDBOX / "home"),
    "XDG_CACHE_HOME": str(_SANDBOX / "xdg-cache"),
    "TORCH_HOME": str(_SANDBOX / "torch"),
    "NATGAN_CACHE_DIR": str(_SANDBOX / "natgan-cache"),
    "MPLCONFIGDIR": str(_SANDBOX / "matplotlib"),
    "NATGAN_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "NATGAN_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_DROPPED = ("NATGAN_WEIGHTS", "NATGAN_INCEPTION")  # the user's own weights must not change an outcome
os.environ.update(_ENV)  # before torch is imported below: OpenMP/MKL read these when they start
for _name in _DROPPED:
    os.environ.pop(_name, None)
(_SANDBOX / "home").mkdir()

import torch  # noqa: E402 - after the environment above

torch.set_num_threads(1)


def _refuse_download(url, target, **_):
    raise OSError(f"tests never download ({url}); build the file in tmp_path instead")


_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


def _local(host) -> bool:
    host = str(host)
    return host in ("localhost", "::1", "", "None") or host.startswith("127.") or host == socket.gethostname()


def _loopback_only(self, address):
    """Loopback (torchrun's gloo rendezvous) and Unix sockets are fine; anything else is the network."""
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        raise OSError(f"tests never use the network (connect to {address[0]})")
    return _real_connect(self, address)


def _local_names_only(host, *args, **kwargs):
    """No DNS lookups of remote names either (a lookup alone can wait seconds on a machine without DNS)."""
    if not _local(host):
        raise socket.gaierror(socket.EAI_NONAME, f"tests never use the network (look up {host})")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_session():
    from natgan.metrics import weights

    patch = pytest.MonkeyPatch()
    patch.setattr(weights, "download", _refuse_download)
    patch.setattr(socket.socket, "connect", _loopback_only)
    patch.setattr(socket, "getaddrinfo", _local_names_only)
    # clean-fid's own TorchScript location is a fixed /tmp path that other programs on the machine fill
    patch.setattr(weights.WeightsFile, "tool_location",
                  lambda self: _SANDBOX / "tool-locations" / self.filename)
    yield _SANDBOX
    patch.undo()


def pytest_unconfigure(config):
    shutil.rmtree(_SANDBOX, ignore_errors=True)


@pytest.fixture(scope="module")
def one_thread():
    """Pin torch to one intra-op thread for a module or test whose point is bitwise equality (already the
    session's setting; requesting it states the requirement and survives a change of that default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
