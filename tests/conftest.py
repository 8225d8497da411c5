"""Shared fixtures: ml-100k (from the installed recbole wheel) and a tiny synthetic dataset
(:func:`llmrec.testing.fixtures.write_tiny_dataset`)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# as the CLI runs (llmrec/cli/__init__.py); before torch is first imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from llmrec.testing.fixtures import write_tiny_dataset  # noqa: E402


def _threads_per_worker() -> int | None:
    """Under xdist, the cores shared out among the workers: each worker's torch (and the CLIs
    it launches) using every core oversubscribes them, and small ops then wait on each other's
    thread barriers (a SmolLM2 decode step took 0.8 s instead of 0.12 s on 2 cores)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 2:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


if (_THREADS := _threads_per_worker()) is not None:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
    import torch

    torch.set_num_threads(_THREADS)


@pytest.fixture(scope="session")
def ml100k():
    from llmrec.data.dataset import load_dataset

    return load_dataset("ml-100k")


@pytest.fixture()
def tiny_dir(tmp_path):
    return write_tiny_dataset(tmp_path / "data")


@pytest.fixture()
def tiny(tiny_dir):
    from llmrec.data.dataset import load_dataset

    return load_dataset("tiny", tiny_dir)
