"""Tiny shared data for the unlearning tests: a synthetic workspace and models trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmrec.data.dataset import Dataset, load_dataset
from llmrec.data.split import Split, random_split
from llmrec.data.synthetic import SyntheticSpec, write_synthetic
from llmrec.testing.unlearners import Tiny, build_tiny


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Deterministic and cheap on a shared machine: one torch thread per test."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> tuple[Dataset, Split, Path]:
    """A small synthetic dataset ``s`` (4,000 interactions) with a seeded random split, and the
    folder it lies in."""
    folder = tmp_path_factory.mktemp("synth")
    write_synthetic(SyntheticSpec(4000, users=120, items=200, seed=5), folder, "s")
    ds = load_dataset("s", folder / "s")
    return ds, random_split(ds, seed=1), folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    """The unlearner contract's tiny workspace and models (:func:`build_tiny`)."""
    return build_tiny(tmp_path_factory.mktemp("tiny"))
