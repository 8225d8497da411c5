"""Tiny shared data for the unlearning tests: a synthetic workspace and models trained on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from llmrec.data.dataset import Dataset, load_dataset
from llmrec.data.split import TRAIN, Split, random_split
from llmrec.data.synthetic import SyntheticSpec, write_synthetic
from llmrec.models import CFModel, build_model
from llmrec.workspace import Workspace

#: base-model recipe of the tiny models (seconds to train)
TINY_MODEL = {"dim": 8, "epochs": 3, "batch_size": 256, "n_neg": 2, "seed": 7}


@dataclass
class Tiny:
    """A synthetic workspace (nothing recorded in its ledger) and models trained on its split."""

    ws: Workspace
    ds: Dataset
    split: Split
    models: dict[str, CFModel]
    data_dir: Path

    def fresh_workspace(self, root: Path) -> Workspace:
        """A new workspace (empty ledger) on the same data and split as :attr:`ws`."""
        return Workspace(root / "ws", dataset="tiny", data_dir=self.data_dir)


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
    folder = tmp_path_factory.mktemp("tiny-data")
    write_synthetic(SyntheticSpec(1500, users=60, items=80, seed=4), folder, "tiny")
    ws = Workspace(tmp_path_factory.mktemp("tiny-ws") / "ws", dataset="tiny", data_dir=folder)
    ds, split = ws.dataset, ws.split
    m = split.mask(TRAIN)
    models = {}
    for name in ("bpr", "lightgcn"):
        torch.set_num_threads(1)
        model = build_model(name, ds.n_users, ds.n_items, **TINY_MODEL)
        model.fit(ds.inter_user[m], ds.inter_item[m])
        model.ledger_version = 0
        models[name] = model.eval()
    return Tiny(ws, ds, split, models, folder)
