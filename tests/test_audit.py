"""Audits on hand-made cases: pair ranks, membership inference, attribute inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec.data.dataset import Dataset
from llmrec.errors import DataError
from llmrec.privacy.attributes import (
    AGE_GROUPS,
    age_group,
    attack,
    attribute_inference,
    attribute_labels,
    balanced_sample,
)
from llmrec.privacy.membership import (
    membership_inference,
    pair_features,
    pair_ranks,
    rank_summary,
    sample_non_members,
)


def _scorer(matrix: np.ndarray):
    m = torch.as_tensor(matrix, dtype=torch.float32)
    return lambda users: m[torch.as_tensor(users)]


def test_pair_ranks_ties_and_exclusions():
    s = np.array([[5.0, 4.0, 4.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    score = _scorer(s)
    r = pair_ranks(score, 5, np.array([0, 0, 0, 1]), np.array([0, 1, 4, 2]))
    # item 1 ties with item 2: 1 above + half of one tie
    assert r.tolist() == [1.0, 2.5, 5.0, 3.0]
    # excluding item 0 for user 0 moves everything up by one
    r = pair_ranks(score, 5, np.array([0, 0]), np.array([1, 4]), np.array([0]), np.array([0]))
    assert r.tolist() == [1.5, 4.0]
    summary = rank_summary(np.array([1.0, 3.0, 5.0]), 5)
    assert summary["median_rank"] == 3.0 and summary["mean_percentile"] == pytest.approx(0.5)


def test_pair_features_percentile():
    s = np.array([[3.0, 2.0, 1.0, 0.0]])
    f = pair_features(_scorer(s), 4, np.array([0, 0]), np.array([0, 3]))
    assert f[:, 2].tolist() == [1.0, 0.0]
    assert f[0, 1] > 0 > f[1, 1]


def _membership_case(leak: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 80
    pos = [rng.choice(n_items, 10, replace=False) for _ in range(n_users)]
    scores = rng.normal(0, 1, (n_users, n_items))
    for u, items in enumerate(pos):
        scores[u, items] += 3.0  # the model ranks every interacted item high
    users = np.repeat(np.arange(n_users), 10)
    items = np.concatenate(pos)
    keys = np.sort(users * n_items + items)
    forgotten = users < 20  # users 0..19 were "forgotten"
    if not leak:
        scores[:20] = 0.0  # an unlearned model that knows nothing about them
    return _scorer(scores), n_items, users, items, keys, forgotten


def test_membership_inference_detects_leak_and_its_absence():
    score, n_items, users, items, keys, f = _membership_case(leak=True)
    leaky = membership_inference(score, n_items, users[f], items[f], users[~f], items[~f], keys)
    assert leaky.auc > 0.9 and leaky.shadow_auc > 0.9
    score, n_items, users, items, keys, f = _membership_case(leak=False)
    clean = membership_inference(score, n_items, users[f], items[f], users[~f], items[~f], keys)
    assert clean.auc == pytest.approx(0.5) and clean.auc_threshold == pytest.approx(0.5)
    gb = membership_inference(
        score, n_items, users[f], items[f], users[~f], items[~f], keys, attacker="gbdt"
    )
    assert abs(gb.auc - 0.5) < 0.05


def test_non_members_are_never_interacted():
    keys = np.sort(np.array([0 * 5 + 1, 0 * 5 + 2, 1 * 5 + 0]))
    items = sample_non_members(np.array([0] * 50 + [1] * 50), keys, 5, np.random.default_rng(0))
    pairs = set(zip([0] * 50 + [1] * 50, items.tolist()))
    assert not pairs & {(0, 1), (0, 2), (1, 0)}


def _attr_dataset(n: int = 400, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            "gender": rng.choice(["M", "F"], n, p=[0.7, 0.3]),
            "age": rng.choice(["10", "20", "30", "40", "52", "60"], n),
            "occupation": rng.choice(["a", "b", "c", "rare"], n, p=[0.35, 0.35, 0.28, 0.02]),
        }
    )
    return Dataset(
        "attrs",
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        None,
        None,
        np.array([f"u{i}" for i in range(n)], dtype=object),
        np.array(["i0"], dtype=object),
        users,
        pd.DataFrame(index=pd.RangeIndex(1)),
    )


def test_age_groups_and_labels():
    assert age_group(["1", "17", "18", "24", "25", "45", "49", "50", "56", "73", "x"]).tolist() == [
        0, 0, 1, 1, 2, 4, 4, 5, 6, 6, -1,
    ]  # fmt: skip
    ds = _attr_dataset()
    y, classes = attribute_labels(ds, "age", min_class_size=1)
    assert classes == [g for g in AGE_GROUPS if g != "45-49"]  # no user aged 45-49
    y, classes = attribute_labels(ds, "occupation", min_class_size=20)
    assert classes == ["a", "b", "c"]  # "rare" has fewer than 20 users
    assert (y[ds.users["occupation"].to_numpy() == "rare"] == -1).all()
    with pytest.raises(DataError):
        attribute_labels(ds, "income")
    idx = balanced_sample(y, np.random.default_rng(0))
    assert len(set(np.bincount(y[idx]).tolist())) == 1


def test_attribute_attack_planted_and_random():
    ds = _attr_dataset()
    rng = np.random.default_rng(1)
    emb = rng.normal(0, 1, (ds.n_users, 8))
    g = (ds.users["gender"] == "F").to_numpy()
    emb[g, 0] += 3.0  # gender planted in one dimension
    res = attribute_inference(emb, ds, ["gender", "occupation"], ["mlp"], min_class_size=20)
    assert res["gender"]["mlp"]["balanced_accuracy"] > 0.85
    assert res["gender"]["mlp"]["chance"] == 0.5 and res["gender"]["mlp"]["auc"] > 0.9
    occ = res["occupation"]["mlp"]
    assert occ["n_classes"] == 3 and occ["balanced_accuracy"] < occ["chance"] + 0.15
    y, _ = attribute_labels(ds, "gender")
    gb = attack(emb, y, "gbdt", folds=3)
    assert gb["balanced_accuracy"] > 0.85 and gb["folds"] == 3
