"""Shared pytest setup: deterministic, single-threaded-friendly torch on the 2-core CI machine."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and kernels are all per-op overhead: on a busy 2-core box extra intra-op threads only
    spin-wait (3-10x slower). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
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
