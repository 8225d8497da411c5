"""Batching of BPR training: no runt last batch, whatever the number of pairs.

Regression: slicing ``n`` pairs into chunks of ``batch_size`` left a last batch of
``n mod batch_size`` pairs (97 of 65,633 on core:5%users); Adam takes a full-size step on it once
per epoch and the retrained gold collapsed (NDCG@10 0.287 -> 0.179).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.models import NegativeSampler, build_model
from llmrec.models.base import even_batches
from llmrec.unlearning.finetune import bpr_epochs


@pytest.mark.parametrize("n,bs", [(65633, 32768), (80808, 32768), (10, 3), (5, 100), (1, 1)])
def test_even_batches_cover_everything_in_equal_parts(n, bs):
    b = even_batches(n, bs)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == n
    assert len(sizes) == -(-n // bs)
    assert sizes.max() <= bs and sizes.max() - sizes.min() <= 1


def _record_batches(model, monkeypatch) -> list[int]:
    seen: list[int] = []
    orig = type(model)._batch_loss

    def spy(self, users, pos, neg):
        seen.append(int(users.numel()))
        return orig(self, users, pos, neg)

    monkeypatch.setattr(type(model), "_batch_loss", spy)
    return seen


def test_fit_never_takes_a_step_on_a_runt_batch(monkeypatch):
    rng = np.random.default_rng(0)
    n = 2 * 64 + 1  # a slicing loop would end each epoch on a batch of one pair
    users, items = rng.integers(0, 20, n), rng.integers(0, 30, n)
    model = build_model("bpr", 20, 30, epochs=2, batch_size=64, dim=4, n_neg=2)
    seen = _record_batches(model, monkeypatch)
    model.fit(users, items)
    assert len(seen) == 2 * 3 and min(seen) >= 42


def test_finetune_epochs_use_even_batches(monkeypatch):
    rng = np.random.default_rng(1)
    n = 3 * 50 + 2
    u = torch.as_tensor(rng.integers(0, 20, n))
    i = torch.as_tensor(rng.integers(0, 30, n))
    model = build_model("bpr", 20, 30, dim=4, n_neg=2)
    seen = _record_batches(model, monkeypatch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bpr_epochs(
        model, u, i, opt, NegativeSampler(20, 30, u, i), torch.Generator().manual_seed(0), 50, 2
    )
    assert len(seen) == 4 and min(seen) >= 38
