"""Ranking metrics (hand-computed cases, RecBole reference formulas) and full-ranking evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmrec.evaluation import evaluate_ranking, ranking_metrics


def L(r: int) -> float:
    """Discount of rank ``r`` (1-based)."""
    return 1.0 / math.log2(r + 1)


# ------------------------------------------------------------------ ranking_metrics by hand
HITS = np.array(
    [
        [1, 0, 1, 0, 0],  # two hits (ranks 1 and 3), |T| = 2
        [0, 0, 0, 0, 0],  # no hit, |T| = 3
        [0, 1, 0, 0, 0],  # one hit at rank 2, |T| = 1
        [0, 0, 0, 1, 1],  # hits at 4 and 5, |T| = 4
    ],
    dtype=bool,
)
NPOS = np.array([2, 3, 1, 4])


@pytest.fixture(scope="module")
def m():
    return ranking_metrics(HITS, NPOS, ks=(1, 3, 5))


def test_recall_divides_by_all_test_items(m):
    np.testing.assert_allclose(m["recall@1"], [1 / 2, 0, 0, 0])
    np.testing.assert_allclose(m["recall@3"], [1, 0, 1, 0])
    np.testing.assert_allclose(m["recall@5"], [1, 0, 1, 2 / 4])


def test_precision_divides_by_k(m):
    np.testing.assert_allclose(m["precision@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(m["precision@3"], [2 / 3, 0, 1 / 3, 0])
    np.testing.assert_allclose(m["precision@5"], [2 / 5, 0, 1 / 5, 2 / 5])


def test_hit(m):
    np.testing.assert_allclose(m["hit@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(m["hit@3"], [1, 0, 1, 0])
    np.testing.assert_allclose(m["hit@5"], [1, 0, 1, 1])


def test_mrr_is_first_hit_within_k(m):
    np.testing.assert_allclose(m["mrr@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(m["mrr@3"], [1, 0, 1 / 2, 0])
    np.testing.assert_allclose(m["mrr@5"], [1, 0, 1 / 2, 1 / 4])


def test_ndcg_ideal_over_min_of_test_size_and_k(m):
    # user 0: DCG@3 = L1 + L3, IDCG over min(2, 3) = 2 positions.
    np.testing.assert_allclose(m["ndcg@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(m["ndcg@3"], [(L(1) + L(3)) / (L(1) + L(2)), 0, L(2), 0])
    # user 3: |T| = 4 < 5, so IDCG@5 sums 4 positions.
    idcg4 = L(1) + L(2) + L(3) + L(4)
    np.testing.assert_allclose(
        m["ndcg@5"], [(L(1) + L(3)) / (L(1) + L(2)), 0, L(2), (L(4) + L(5)) / idcg4]
    )


def test_ndcg_caps_ideal_at_k_when_many_test_items():
    out = ranking_metrics(np.ones((1, 2), dtype=bool), np.array([5]), ks=(2,))
    assert out["ndcg@2"][0] == pytest.approx(1.0)  # IDCG over min(5, 2) = 2 positions
    assert out["recall@2"][0] == pytest.approx(2 / 5)


def test_accepts_torch_and_extra_columns():
    hits = torch.tensor([[False, True, True]])
    out = ranking_metrics(hits, torch.tensor([2]), ks=(2,))
    assert out["ndcg@2"][0] == pytest.approx(L(2) / (L(1) + L(2)))
    assert set(out) == {"recall@2", "ndcg@2", "hit@2", "mrr@2", "precision@2"}


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        ranking_metrics(np.ones((1, 3), bool), np.array([0]), ks=(3,))
    with pytest.raises(ValueError):
        ranking_metrics(np.ones((1, 3), bool), np.array([1]), ks=(5,))
    with pytest.raises(ValueError):
        ranking_metrics(np.ones((2, 3), bool), np.array([1]), ks=(3,))


def _recbole_reference(pos_index: np.ndarray, pos_len: np.ndarray) -> dict[str, np.ndarray]:
    """RecBole 1.2.1 ``metric_info`` formulas (recbole/evaluator/metrics.py), transcribed."""
    k = pos_index.shape[1]
    ranks = np.arange(1, k + 1)
    out = {
        "hit": (np.cumsum(pos_index, axis=1) > 0).astype(float),
        "recall": np.cumsum(pos_index, axis=1) / pos_len.reshape(-1, 1),
        "precision": pos_index.cumsum(axis=1) / ranks,
    }
    mrr = np.zeros(pos_index.shape)
    for row, idx in enumerate(pos_index.argmax(axis=1)):
        mrr[row, idx:] = 1 / (idx + 1) if pos_index[row, idx] > 0 else 0
    out["mrr"] = mrr
    idcg_len = np.minimum(pos_len, k)
    idcg = np.tile(np.cumsum(1.0 / np.log2(ranks + 1)), (len(pos_len), 1))
    for row, idx in enumerate(idcg_len):
        idcg[row, idx:] = idcg[row, idx - 1]
    dcg = np.cumsum(np.where(pos_index, 1.0 / np.log2(ranks + 1), 0), axis=1)
    out["ndcg"] = dcg / idcg
    return out


def test_matches_recbole_formulas_on_random_lists():
    rng = np.random.default_rng(0)
    hits = rng.random((200, 20)) < 0.15
    n_pos = np.maximum(hits.sum(1), 1) + rng.integers(0, 6, 200)
    ours = ranking_metrics(hits, n_pos, ks=(1, 5, 10, 20))
    ref = _recbole_reference(hits, n_pos)
    for name, table in ref.items():
        for k in (1, 5, 10, 20):
            np.testing.assert_allclose(ours[f"{name}@{k}"], table[:, k - 1], err_msg=name)


# ------------------------------------------------------------------ evaluate_ranking
N_ITEMS = 6
# Fixed scores: item j scores (n_items - j) for every user, so the raw ranking is 0, 1, 2, ...
SCORES = np.tile(np.arange(N_ITEMS, 0, -1, dtype=np.float32), (4, 1))


def fixed_scores(users: np.ndarray) -> np.ndarray:
    return SCORES[users]


def test_masked_items_never_rank_and_test_items_hit():
    # user 0: item 0 masked (seen in train), test item 1 -> rank 1 after masking.
    # user 1: items 0, 1 masked, test items 3 and 5 -> ranks 2 and 4 (order 2, 3, 4, 5).
    # user 2: no test item -> not evaluated.
    res = evaluate_ranking(
        fixed_scores,
        N_ITEMS,
        mask_users=np.array([0, 1, 1, 2]),
        mask_items=np.array([0, 0, 1, 3]),
        test_users=np.array([0, 1, 1]),
        test_items=np.array([1, 3, 5]),
        ks=(1, 2, 4),
        return_per_user=True,
    )
    assert res["n_users"] == 2
    np.testing.assert_array_equal(res["per_user"]["users"], [0, 1])
    np.testing.assert_array_equal(res["topk"], [[1, 2, 3, 4], [2, 3, 4, 5]])
    np.testing.assert_allclose(res["per_user"]["recall@1"], [1, 0])
    np.testing.assert_allclose(res["per_user"]["recall@4"], [1, 1])
    np.testing.assert_allclose(res["per_user"]["mrr@4"], [1, 1 / 2])
    ndcg_u1 = (L(2) + L(4)) / (L(1) + L(2))
    np.testing.assert_allclose(res["per_user"]["ndcg@4"], [1, ndcg_u1])
    assert res["ndcg@4"] == pytest.approx((1 + ndcg_u1) / 2)
    assert res["hit@1"] == pytest.approx(0.5)
    assert res["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_without_mask_seen_items_take_slots():
    res = evaluate_ranking(
        fixed_scores, N_ITEMS, None, None, np.array([0]), np.array([1]), ks=(1, 2)
    )
    assert res["recall@1"] == 0 and res["recall@2"] == 1


def test_exclude_items_bool_and_index_forms():
    args = (fixed_scores, N_ITEMS, None, None, np.array([0]), np.array([2]))
    excl = np.zeros(N_ITEMS, dtype=bool)
    excl[[0, 1]] = True
    a = evaluate_ranking(*args, ks=(1,), exclude_items=excl, return_per_user=True)
    b = evaluate_ranking(*args, ks=(1,), exclude_items=np.array([0, 1]), return_per_user=True)
    assert a["recall@1"] == 1 and b["recall@1"] == 1
    np.testing.assert_array_equal(a["topk"], [[2]])


def test_users_restriction_batches_and_no_side_effects():
    rng = np.random.default_rng(1)
    n_users, n_items = 50, 40
    scores = torch.tensor(rng.random((n_users, n_items)), dtype=torch.float32)
    before = scores.clone()
    tu, ti = rng.integers(0, n_users, 120), rng.integers(0, n_items, 120)
    mu, mi = rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)

    def fn(u):
        return scores[torch.as_tensor(u)]

    full = evaluate_ranking(fn, n_items, mu, mi, tu, ti, return_per_user=True)
    small = evaluate_ranking(fn, n_items, mu, mi, tu, ti, batch_size=7, return_per_user=True)
    assert torch.equal(scores, before)  # the caller's scores are not masked in place
    for key in ("recall@10", "ndcg@20", "mrr@5"):
        assert full[key] == pytest.approx(small[key])
    np.testing.assert_array_equal(full["topk"], small["topk"])
    assert full["n_users"] == len(np.unique(tu))

    some = np.array([0, 1, 2, 3, 4, 5, 6, 7, 49])
    sub = evaluate_ranking(fn, n_items, mu, mi, tu, ti, users=some, return_per_user=True)
    expect = np.intersect1d(some, tu)
    np.testing.assert_array_equal(sub["per_user"]["users"], expect)
    pos = np.searchsorted(full["per_user"]["users"], expect)
    np.testing.assert_allclose(sub["per_user"]["ndcg@10"], full["per_user"]["ndcg@10"][pos])


def test_catalogue_smaller_than_k_is_padded():
    res = evaluate_ranking(
        fixed_scores,
        N_ITEMS,
        None,
        None,
        np.array([0]),
        np.array([5]),
        ks=(10,),
        return_per_user=True,
    )
    assert res["recall@10"] == 1
    assert res["topk"].shape == (1, 10) and (res["topk"][0, N_ITEMS:] == -1).all()


def test_bad_score_shape_is_reported():
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(lambda u: np.zeros((len(u), 3)), 5, None, None, [0], [1])
