"""Shared fixtures for the python_udfs tests."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CUDA is present (``make test-gpu``) and are skipped elsewhere."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make test-gpu on a machine with one)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny batches: intra-op threading only adds sync overhead (10x slower on 2 cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
