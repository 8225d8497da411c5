"""The reference's selection baselines and the knapsack/DP strategy: outputs follow the data
(clusters, embeddings, VALID), never fixed ratios or random vectors."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import strategies as st

# the reference's ml-100k BPR table of TEST Hit@10 (rows: clusters, columns: shares 5..50%)
REFERENCE_TEST_TABLE = np.array(
    [
        [0.0518, 0.0618, 0.0373, 0.117, 0.043, 0.1822, 0.1839, 0.2444, 0.3032, 0.3424],
        [0.0889, 0.0829, 0.0687, 0.153, 0.0756, 0.1845, 0.2074, 0.3026, 0.3361, 0.3594],
        [0.0085, 0.0384, 0.0398, 0.0712, 0.1208, 0.1692, 0.2537, 0.2351, 0.2806, 0.3337],
        [0.0326, 0.0255, 0.0773, 0.0232, 0.1578, 0.1713, 0.2048, 0.2667, 0.3294, 0.3642],
        [0.0451, 0.0149, 0.0282, 0.1197, 0.1517, 0.1721, 0.2256, 0.2584, 0.3363, 0.3607],
    ]
)


def test_knapsack_gives_the_reference_ratios_from_its_test_table():
    # the paper's DP ratios [5, 5, 35, 50, 5] are the DP optimum of its TEST Hit@10 table
    ratios, best = st.knapsack_ratios(REFERENCE_TEST_TABLE)
    assert np.allclose(ratios, [0.05, 0.05, 0.35, 0.50, 0.05])
    assert best == pytest.approx(0.8037)


def test_knapsack_is_exact_against_brute_force():
    rng = np.random.default_rng(3)
    table = rng.random((3, 6))
    ratios, best = st.knapsack_ratios(table, step=10, capacity=100)
    brute = max(
        (table[0, a] + table[1, b] + table[2, c], (a, b, c))
        for a in range(6)
        for b in range(6)
        for c in range(6)
        if (a + b + c + 3) * 10 == 100
    )
    assert best == pytest.approx(brute[0])
    assert np.allclose(ratios, (np.array(brute[1]) + 1) / 10)
    with pytest.raises(ValueError, match="cannot sum"):
        st.knapsack_ratios(table[:, :2], step=10, capacity=100)


def _synthetic(n_users=30, n_items=60, k=3, seed=0):
    """Items in k blocks (cluster = block); each user's history covers every block, each
    user's validation item lies in a block given by ``valid_block``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_items) % k
    histories = [rng.choice(n_items, size=30, replace=False) for _ in range(n_users)]
    return labels, histories


def _neighbour_scores(labels, n_items):
    """score(user, j) = how many of j's two neighbours (j + 3, j + 6: same cluster) are in the
    selected history; the more items of the right cluster a prompt keeps, the better."""
    neigh = (np.arange(n_items)[:, None] + np.array([3, 6])[None, :]) % n_items

    def score_rows(selections):
        out = np.zeros((len(selections), n_items))
        for r, sel in enumerate(selections):
            out[r] = np.isin(neigh, sel).sum(axis=1)
        return out

    return score_rows


def _dp_ratios(valid_block: int, seed: int = 0):
    labels, histories = _synthetic(seed=seed)
    n_items, k = len(labels), 3
    rng = np.random.default_rng(1)
    cands, targets = [], []
    for h in histories:
        pool = np.setdiff1d(np.arange(n_items), h)
        c = rng.choice(pool, size=12, replace=False)
        cands.append(c)
        in_block = c[labels[c] == valid_block]
        targets.append(in_block[:1])
    util = st.hit_utility(_neighbour_scores(labels, n_items), cands, targets, k=3)
    table = st.ratio_table(
        histories, [labels[h] for h in histories], util, H=20, k=k, seed=5, step=10, n_ratios=8
    )
    return st.knapsack_ratios(table, step=10, capacity=100)[0], table


def test_dp_ratios_follow_valid():
    # moving every user's VALID item to another cluster moves the largest share with it
    r0, t0 = _dp_ratios(valid_block=0)
    r2, t2 = _dp_ratios(valid_block=2)
    assert np.argmax(r0) == 0 and np.argmax(r2) == 2
    assert not np.allclose(r0, r2) and not np.allclose(t0, t2)
    assert r0.sum() == pytest.approx(1.0) and r2.sum() == pytest.approx(1.0)


def test_dp_selection_follows_its_ratios_and_the_clusters():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    ratios = np.array([0.05, 0.05, 0.35, 0.5, 0.05])
    pos = st.dp(labels, ratios, 100, seed=1, user=2)
    assert len(pos) == 100 and np.all(np.diff(pos) > 0)
    assert np.bincount(labels[pos], minlength=5).tolist() == [5, 5, 35, 50, 5]
    other = st.dp(labels, ratios[::-1], 100, seed=1, user=2)
    assert np.bincount(labels[other], minlength=5).tolist() == [5, 50, 35, 5, 5]
    # a cluster short of its share: the rest goes to the others, the budget is used up
    few = np.concatenate([np.zeros(3, int), rng.integers(1, 5, 200)])
    q = st.dp(few, ratios, 100, seed=1, user=2)
    assert len(q) == 100 and (few[q] == 0).sum() == 3
    assert st.dp(labels[:50], ratios, 100, 1, 2).tolist() == list(range(50))


def test_dp_quotas_never_exceed_counts():
    rng = np.random.default_rng(9)
    for _ in range(200):
        counts = rng.integers(0, 30, 5)
        w = rng.dirichlet(np.ones(5))
        H = int(rng.integers(1, 120))
        q = st.dp_quotas(counts, w, H)
        assert (q <= counts).all() and q.sum() == min(H, counts.sum())


def test_average_takes_the_same_share_of_every_cluster():
    labels = np.repeat([0, 1, 2, 3], [100, 60, 36, 4])  # 200 items, H = 50: share 1/4
    pos = st.average(labels, 50, seed=3, user=1)
    assert len(pos) == 50
    assert np.bincount(labels[pos], minlength=4).tolist() == [25, 15, 9, 1]
    # a cluster the share rounds to zero still gets one item
    labels = np.repeat([0, 1], [198, 2])
    assert (labels[st.average(labels, 50, 3, 1)] == 1).sum() >= 1
    # the quotas follow the clusters, not a fixed pattern
    relabel = np.repeat([3, 2, 1, 0], [100, 60, 36, 4])
    got = np.bincount(relabel[st.average(relabel, 50, 3, 1)], minlength=4).tolist()
    assert got == [1, 9, 15, 25]


def test_random_and_none():
    a = st.random_selection(100, 10, seed=1, user=2)
    assert len(a) == 10 and len(set(a)) == 10 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, st.random_selection(100, 10, 1, 2))
    assert not np.array_equal(a, st.random_selection(100, 10, 1, 3))
    assert st.random_selection(5, 10, 1, 2).tolist() == list(range(5))
    assert st.no_selection(100, 10).tolist() == list(range(90, 100))
    assert st.no_selection(4, 10).tolist() == list(range(4))


def test_attention_weights_follow_the_embeddings():
    rng = np.random.default_rng(4)
    hist = rng.normal(size=(40, 8))
    hist /= np.linalg.norm(hist, axis=1, keepdims=True)
    target = 7
    cands = hist[target] + 0.05 * rng.normal(size=(5, 8))  # candidates close to item 7
    pos, w = st.attention(hist, cands, np.ones(40), H=5)
    assert target in pos and int(np.argmax(w)) == target
    # other embeddings, other weights: the selection moves with the nearest history item
    cands2 = hist[21] + 0.05 * rng.normal(size=(5, 8))
    pos2, w2 = st.attention(hist, cands2, np.ones(40), H=5)
    assert int(np.argmax(w2)) == 21 and not np.allclose(w, w2)


def test_select_dispatches_every_strategy():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    kw = dict(
        history_vectors=v,
        history_clusters=rng.integers(0, 3, 30),
        ratings=rng.integers(1, 6, 30).astype(float),
        candidate_vectors=v[:3],
        H=10,
        seed=1,
        user=0,
        ratios=np.array([0.2, 0.3, 0.5]),
    )
    for name in st.ALL_STRATEGIES:
        pos = st.select(name, **kw)
        assert len(pos) == 10 and np.all(np.diff(pos) > 0), name
    with pytest.raises(ValueError, match="needs per-cluster ratios"):
        st.select("dp", **{**kw, "ratios": None})
    with pytest.raises(ValueError, match="strategy must be one of"):
        st.select("group", **kw)
