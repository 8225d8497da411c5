"""Shared fixtures: ml-100k (from the installed recbole wheel) and a tiny synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def ml100k():
    from llmrec.data.dataset import load_dataset

    return load_dataset("ml-100k")


def write_tiny_dataset(folder: Path, name: str = "tiny") -> Path:
    """A 6-user, 8-item atomic dataset with user attributes and item text."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    t = 0
    for u in range(6):
        for i in range(8):
            if (u + i) % 3 != 0:
                t += 1
                inter.append(f"u{u}\ti{i}\t{1 + (u * i) % 5}\t{t}")
    (folder / f"{name}.inter").write_text("\n".join(inter) + "\n")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token"]
    users += [
        f"u{u}\t{20 + 5 * u}\t{'MF'[u % 2]}\t{['student', 'writer', 'other'][u % 3]}"
        for u in range(6)
    ]
    (folder / f"{name}.user").write_text("\n".join(users) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [
        f"i{i}\tMovie Number {i}\t{1990 + i}\t{['Drama', 'Comedy Romance'][i % 2]}"
        for i in range(8)
    ]
    (folder / f"{name}.item").write_text("\n".join(items) + "\n")
    return folder


@pytest.fixture()
def tiny_dir(tmp_path):
    return write_tiny_dataset(tmp_path / "data")


@pytest.fixture()
def tiny(tiny_dir):
    from llmrec.data.dataset import load_dataset

    return load_dataset("tiny", tiny_dir)
