"""The test session itself: no network, no home directory, one thread (tests/conftest.py)."""

import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch


def test_home_and_caches_are_a_temporary_folder():
    from natgan.metrics.cache import cache_dir

    sandbox = Path(tempfile.gettempdir())
    for path in (Path.home(), cache_dir(), Path(torch.hub.get_dir()), Path(os.environ["XDG_CACHE_HOME"])):
        assert sandbox in path.resolve().parents and "natgan-tests-" in str(path), path
    assert "NATGAN_WEIGHTS" not in os.environ and "NATGAN_INCEPTION" not in os.environ


def test_nothing_is_downloaded():
    from natgan.metrics import weights

    assert os.environ["NATGAN_OFFLINE"] == "1"
    with pytest.raises(OSError, match="never download"):
        weights.download(weights.VGG16.url, Path(tempfile.gettempdir()) / "never.pth")
    with pytest.raises(OSError, match="never use the network"):
        socket.create_connection(("93.184.216.34", 443), timeout=1)
    with pytest.raises(OSError, match="never use the network"):
        socket.getaddrinfo("download.pytorch.org", 443)
    with socket.socket() as server:  # loopback stays usable (torchrun's rendezvous)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        socket.create_connection(server.getsockname(), timeout=5).close()


def test_one_thread_here_and_in_subprocesses():
    assert torch.get_num_threads() == 1
    assert os.environ["NATGAN_THREADS"] == os.environ["OMP_NUM_THREADS"] == "1"
