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


@pytest.fixture(scope="session", autouse=True)
def shared_onnx_cache(tmp_path_factory):
    """One ONNX model cache for the session: the default embedding backend (auto) runs an
    exported ONNX model on CPUs, and the tests that build into a fresh lake would each export
    it again (``onnx_backend.cache_root``). Subprocesses (dbt, Ray actors) inherit it."""
    import os

    if os.environ.get("PILEHOUSE_MODEL_CACHE"):
        yield
        return
    os.environ["PILEHOUSE_MODEL_CACHE"] = str(tmp_path_factory.mktemp("onnx-model-cache"))
    yield
    os.environ.pop("PILEHOUSE_MODEL_CACHE", None)
