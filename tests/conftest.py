"""Shared fixtures: ml-100k (from the installed recbole wheel) and a tiny synthetic dataset
(:func:`llmrec.testing.fixtures.write_tiny_dataset`)."""

from __future__ import annotations

import os

import pytest

from llmrec.testing.fixtures import write_tiny_dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
