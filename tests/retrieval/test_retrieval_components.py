"""Candidate generator statistics, ranking, clustering, strategies and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval import strategies as strat
from retrieval.candidates import (
    CooccurrenceConfig,
    CooccurrenceModel,
    counts_checksum,
    top_n,
    user_rows,
)
from retrieval.clusters import cluster_items, kmeans
from retrieval.encoders import CFEncoder, EmbeddingCache, TextEncoder, make_encoder

CFG = CooccurrenceConfig()


def _rows_from_mask(mask: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(r).astype(np.int64) for r in mask]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(2, 12),
    st.integers(2, 15),
    st.floats(0.05, 0.8),
)
def test_decrement_equals_recount(seed, n_users, n_items, density):
    """Any sequence of row shrinkages, applied as block updates, equals counting again."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    gen = CooccurrenceModel.build(CFG, user_rows(n_items, _rows_from_mask(mask)))
    for _ in range(3):
        users = np.unique(rng.integers(n_users, size=rng.integers(1, n_users + 1)))
        new = mask.copy()
        new[users] &= rng.random((len(users), n_items)) < 0.6
        gen.update(
            user_rows(n_items, _rows_from_mask(mask[users])),
            user_rows(n_items, _rows_from_mask(new[users])),
        )
        mask = new
        fresh = CooccurrenceModel.build(CFG, user_rows(n_items, _rows_from_mask(mask)))
        assert gen.equals(fresh)
        assert gen.checksum == fresh.checksum == counts_checksum(gen.counts)
        rows = user_rows(n_items, _rows_from_mask(mask))
        assert np.array_equal(gen.scores(rows), fresh.scores(rows))


def test_counts_definition():
    rows = user_rows(3, [np.array([0, 1]), np.array([0, 1, 2]), np.array([], np.int64)])
    gen = CooccurrenceModel.build(CFG, rows)
    w2, w3 = (np.rint(CFG.scale / n**CFG.user_weight_power) for n in (2, 3))
    assert gen.counts[0, 1] == w2 + w3 and gen.counts[1, 2] == w3 and gen.counts[2, 2] == w3
    assert gen.counts.dtype == np.int32 and list(gen.degree) == [2, 2, 1]
    assert np.array_equal(gen.counts, gen.counts.T)
    assert CooccurrenceModel.count_dtype(CFG, 10**6) == np.int64


def test_scores_rank_co_occurring_items_first():
    # items 0-2 are always seen together, items 3-5 too
    rows = [np.array([0, 1, 2])] * 5 + [np.array([3, 4, 5])] * 5 + [np.array([0, 1])]
    gen = CooccurrenceModel.build(CFG, user_rows(6, rows))
    s = gen.scores(user_rows(6, [np.array([0, 1])]))[0]
    assert s[2] > s[3:].max()
    cold = gen.scores(user_rows(6, [np.zeros(0, np.int64)]))[0]
    assert np.argmax(cold) in (0, 1)  # popularity decides for a user without history


def test_top_n_ties_blocked_and_padding():
    scores = np.array([[0.5, 0.9, 0.9, -np.inf, 0.1, 0.9]])
    assert top_n(scores, 3).tolist() == [[1, 2, 5]]  # ties -> lower index first
    blocked = user_rows(6, [np.array([2])])
    assert top_n(scores, 4, blocked).tolist() == [[1, 5, 0, 4]]
    assert top_n(scores, 7).tolist() == [[1, 2, 5, 0, 4, -1, -1]]  # -inf never returned
    assert top_n(scores, 0).shape == (1, 0)


def test_kmeans_deterministic_and_sensible():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.1, size=(40, 4)) for c in (-3, 0, 3)])
    a, ca = kmeans(x, 3, seed=5)
    b, cb = kmeans(x, 3, seed=5)
    assert np.array_equal(a, b) and np.array_equal(ca, cb)
    assert len(np.unique(a[:40])) == 1 and len(np.unique(a)) == 3
    labels, _ = kmeans(x[:2], 10)
    assert sorted(labels) == [0, 1]
    cl = cluster_items(x[:10], np.arange(5, 15), 20, 3, 0)
    assert (cl.labels[:5] == -1).all() and (cl.labels[5:15] >= 0).all() and cl.k == 3


def test_largest_remainder():
    q = strat.largest_remainder(np.array([5, 3, 2]), 5)
    assert q.sum() == 5 and list(q) == [3, 1, 1]
    assert list(strat.largest_remainder(np.array([1, 1]), 5)) == [1, 1]
    q = strat.largest_remainder(np.array([10, 10, 10, 1]), 4)
    assert q.sum() == 4 and q[3] == 0


def _history(n: int = 60, k: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    clusters = rng.integers(k, size=n)
    centers = rng.normal(size=(k, 8))
    v = centers[clusters] + 0.2 * rng.normal(size=(n, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ratings = rng.integers(1, 6, size=n).astype(float)
    return clusters, v, ratings


def test_preference_follows_cluster_shares():
    clusters, _, ratings = _history()
    pos = strat.preference(clusters, ratings, 20, seed=1, user=3)
    assert len(pos) == 20 and np.all(np.diff(pos) > 0)
    expected = strat.largest_remainder(np.bincount(clusters), 20)
    assert np.array_equal(np.bincount(clusters[pos], minlength=len(expected)), expected)
    assert np.array_equal(pos, strat.preference(clusters, ratings, 20, seed=1, user=3))
    assert not np.array_equal(pos, strat.preference(clusters, ratings, 20, seed=1, user=4))
    assert len(strat.preference(clusters[:5], ratings[:5], 20, 1, 3)) == 5


def test_preference_prefers_high_ratings():
    clusters = np.zeros(200, np.int64)
    ratings = np.where(np.arange(200) < 100, 5.0, 1.0)
    picks = [strat.preference(clusters, ratings, 20, seed=s, user=0) for s in range(20)]
    high = np.mean([np.mean(p < 100) for p in picks])
    assert high > 0.75


def test_diversity_covers_clusters_and_is_deterministic():
    clusters, v, ratings = _history()
    pos = strat.diversity(v, clusters, ratings, 8)
    assert len(pos) == 8 and len(np.unique(pos)) == 8
    assert set(clusters[pos]) == set(clusters)  # 6 clusters, all covered
    assert np.array_equal(pos, strat.diversity(v, clusters, ratings, 8))
    pos2 = strat.diversity(v, clusters, ratings, 3)
    assert len(set(clusters[pos2])) == 3  # never two from one cluster while others are open


def test_attention_keeps_items_closest_to_candidates():
    clusters, v, ratings = _history()
    ratings[:] = 5.0
    target = v[clusters == 2]
    pos, weight = strat.attention(v, target, ratings, 10)
    assert len(pos) == 10 and np.all(np.diff(pos) > 0)
    q = target.mean(axis=0)
    assert set(pos) == set(np.argsort(-(v @ q))[:10])  # equal ratings: the 10 closest items
    assert np.isclose(weight.sum(), 1.0)
    low = ratings.copy()
    low[pos] = 1.0
    pos_low, _ = strat.attention(v, target, low, 10)
    assert not np.array_equal(pos, pos_low)  # ratings weigh the attention
    empty, w = strat.attention(v[:0], target, ratings[:0], 10)
    assert len(empty) == 0 and len(w) == 0


def test_embedding_cache(tmp_path):
    cache = EmbeddingCache(tmp_path)
    ids = np.array([0, 2, 3, 5])
    vec = np.arange(8, dtype=np.float32).reshape(4, 2)
    cache.put("enc", "data", 1, ids=ids, items=vec)
    cache.put("enc", "data", 4, ids=ids[1:], items=vec[1:])
    assert [v for v, _ in cache.entries("enc", "data")] == [4, 1]
    assert np.array_equal(cache.get("enc", "data", 1)["items"], vec)
    assert cache.get("enc", "data", 2) is None
    assert np.array_equal(cache.find_covering("enc", "data", np.array([0, 5])), vec[[0, 3]])
    assert cache.find_covering("enc", "data", np.array([1])) is None
    assert cache.find_covering("other", "data", np.array([0])) is None
    removed = cache.purge("enc", "data", 4)
    assert [p.name for p in removed] == ["enc__data__v1.npz"]
    assert cache.find_covering("enc", "data", np.array([0])) is None  # item 0 is gone
    cache.path("enc", "data", 9).write_bytes(b"corrupt")
    assert cache.get("enc", "data", 9) is None


def test_encoder_specs_round_trip():
    t = TextEncoder(model="some/model", batch_size=8)
    assert make_encoder(t.spec()) == t and t.key.startswith("text-some-model-")
    c = CFEncoder(model="lightgcn", seed=3, params={"epochs": 2})
    assert make_encoder(c.spec()) == c and c.key != CFEncoder(seed=4).key
    with pytest.raises(Exception, match="unknown encoder"):
        make_encoder({"kind": "tfidf"})
