"""CRAGRU's three retrieval strategies: which at most ``H`` history items go into the prompt.

Every strategy takes the user's retained history (item indices in chronological order, their
ratings), unit item embeddings and the item clusters, and returns positions into the history,
in chronological order. With ``len(history) <= H`` the whole history is kept. Everything is
computed from the embeddings and the data; outputs are deterministic given ``seed``.

* ``preference`` — the history's share per cluster sets each cluster's quota of ``H``
  (largest-remainder rounding); inside a cluster items are sampled without replacement with
  probability proportional to their rating (Gumbel top-k, ``rng = default_rng([seed, user])``).
* ``diversity`` — maximal marginal relevance under the budget: relevance is the cosine to the
  user's rating-weighted profile, redundancy the highest cosine to an already chosen item;
  while some cluster of the history is uncovered, only items of uncovered clusters compete.
* ``attention`` — scaled dot-product attention of the candidate set over the history: the query
  is the mean candidate embedding, keys are the history embeddings; weights
  ``softmax(cos / temperature)`` are multiplied by the normalised rating and the top ``H`` kept.

Baselines (the reference implementation's selection modes, see ``docs/cragru_reference.md``):

* ``none`` — no selection: the ``H`` most recent items (plain truncation to the budget);
* ``random`` — ``H`` items uniformly at random (``rng = default_rng([seed, user])``);
* ``average`` — the same share ``H / n`` of every cluster of the history (at least one item of
  each cluster while the budget allows), items drawn uniformly inside a cluster;
* ``dp`` — knapsack/DP diversity: fixed per-cluster shares of the budget (``ratios``, one per
  cluster, summing to 1) chosen by :func:`knapsack_ratios` over a utility table measured on
  VALID (:func:`ratio_table`), items drawn uniformly inside a cluster; budget a cluster cannot
  fill goes to the other clusters in proportion to their ratios.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("preference", "diversity", "attention")
BASELINES = ("none", "random", "average", "dp")
ALL_STRATEGIES = STRATEGIES + BASELINES


def _rating_weights(ratings: np.ndarray) -> np.ndarray:
    """Positive weights proportional to the ratings (all ones without ratings)."""
    r = np.asarray(ratings, dtype=np.float64)
    if not np.isfinite(r).all() or r.max(initial=0) <= 0:
        return np.ones(len(r))
    return np.maximum(r, 1e-3) / r.max()


def largest_remainder(counts: np.ndarray, budget: int) -> np.ndarray:
    """Integer quotas proportional to ``counts`` summing to ``min(budget, counts.sum())``.

    Ties in the remainder go to the larger count, then to the lower index.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total <= budget:
        return counts.copy()
    exact = budget * counts / total
    quota = np.floor(exact).astype(np.int64)
    left = budget - int(quota.sum())
    order = np.lexsort((np.arange(len(counts)), -counts, -(exact - quota)))
    quota[order[:left]] += 1
    return np.minimum(quota, counts)


def preference(
    history_clusters: np.ndarray,
    ratings: np.ndarray,
    H: int,
    seed: int,
    user: int,
) -> np.ndarray:
    """Preference-aware selection (positions into the history, chronological)."""
    n = len(history_clusters)
    if n <= H:
        return np.arange(n)
    clusters, inverse, counts = np.unique(history_clusters, return_inverse=True, return_counts=True)
    quota = largest_remainder(counts, H)
    rng = np.random.default_rng([int(seed), int(user)])
    keys = np.log(_rating_weights(ratings)) + rng.gumbel(size=n)
    chosen = []
    for c in range(len(clusters)):
        pos = np.flatnonzero(inverse == c)
        best = pos[np.argsort(-keys[pos], kind="stable")[: quota[c]]]
        chosen.append(best)
    return np.sort(np.concatenate(chosen))


def diversity(
    history_vectors: np.ndarray,
    history_clusters: np.ndarray,
    ratings: np.ndarray,
    H: int,
    trade_off: float = 0.5,
) -> np.ndarray:
    """Diversity-aware selection by cluster-covering MMR (positions, chronological)."""
    n = len(history_vectors)
    if n <= H:
        return np.arange(n)
    v = np.asarray(history_vectors, dtype=np.float64)
    w = _rating_weights(ratings)
    profile = w @ v
    norm = np.linalg.norm(profile)
    relevance = v @ (profile / norm) if norm > 0 else np.zeros(n)
    redundancy = np.zeros(n)
    _, cluster_of = np.unique(history_clusters, return_inverse=True)
    uncovered = np.ones(cluster_of.max() + 1, dtype=bool)
    open_ = np.ones(n, dtype=bool)
    chosen = []
    for step in range(H):
        score = trade_off * relevance - (1.0 - trade_off) * redundancy
        allowed = open_ & uncovered[cluster_of] if uncovered.any() else open_
        pick = int(np.argmax(np.where(allowed, score, -np.inf)))
        chosen.append(pick)
        open_[pick] = False
        uncovered[cluster_of[pick]] = False
        sim = v @ v[pick]
        redundancy = sim if step == 0 else np.maximum(redundancy, sim)
    return np.sort(np.asarray(chosen, dtype=np.int64))


def attention(
    history_vectors: np.ndarray,
    candidate_vectors: np.ndarray,
    ratings: np.ndarray,
    H: int,
    temperature: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Attention-aware selection: ``(positions chronological, weights of all history items)``."""
    n = len(history_vectors)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    v = np.asarray(history_vectors, dtype=np.float64)
    cand = np.asarray(candidate_vectors, dtype=np.float64)
    q = cand.mean(axis=0) if len(cand) else np.zeros(v.shape[1])
    qn = np.linalg.norm(q)
    logits = v @ (q / qn) / temperature if qn > 0 else np.zeros(n)
    att = np.exp(logits - logits.max())
    weight = att / att.sum() * _rating_weights(ratings)
    if n <= H:
        return np.arange(n), weight
    # highest weight first; ties go to the more recent item
    order = np.lexsort((-np.arange(n), -weight))
    return np.sort(order[:H]), weight


# ---------------------------------------------------------------------------- baselines
def _rng(seed: int, user: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(user)])


def no_selection(n: int, H: int) -> np.ndarray:
    """No selection: the ``H`` most recent positions."""
    return np.arange(max(0, n - int(H)), n)


def random_selection(n: int, H: int, seed: int, user: int) -> np.ndarray:
    """``H`` positions uniformly at random, without replacement (chronological)."""
    if n <= H:
        return np.arange(n)
    return np.sort(_rng(seed, user).choice(n, size=int(H), replace=False))


def _fill_by_quota(
    inverse: np.ndarray, quota: np.ndarray, H: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform draws of ``quota[c]`` positions from each cluster ``c`` (a random order per
    cluster), then the remaining budget from the leftovers in that same random order."""
    n = len(inverse)
    keys = rng.random(n)
    chosen = np.zeros(n, dtype=bool)
    for c, q in enumerate(quota):
        pos = np.flatnonzero(inverse == c)
        chosen[pos[np.argsort(keys[pos], kind="stable")[: int(q)]]] = True
    left = int(H) - int(chosen.sum())
    if left > 0:
        rest = np.flatnonzero(~chosen)
        chosen[rest[np.argsort(keys[rest], kind="stable")[:left]]] = True
    return np.flatnonzero(chosen)


def average(history_clusters: np.ndarray, H: int, seed: int, user: int) -> np.ndarray:
    """The same share ``H / n`` of every cluster (at least one item per cluster while the
    budget allows); uniform inside a cluster (positions, chronological)."""
    n = len(history_clusters)
    if n <= H:
        return np.arange(n)
    _, inverse, counts = np.unique(history_clusters, return_inverse=True, return_counts=True)
    quota = np.floor(counts * (H / n)).astype(np.int64)
    # one item of each cluster the share rounded to zero, smallest clusters first
    spare = int(H) - int(quota.sum())
    for c in np.lexsort((np.arange(len(counts)), counts)):
        if spare <= 0:
            break
        if quota[c] == 0:
            quota[c], spare = 1, spare - 1
    return _fill_by_quota(inverse, quota, int(H), _rng(seed, user))


def dp_quotas(counts: np.ndarray, ratios: np.ndarray, H: int) -> np.ndarray:
    """Integer per-cluster quotas: ``ratios`` (one per cluster) of the budget ``H``, capped by
    ``counts``; the share a cluster cannot fill is re-divided among the others in proportion to
    their ratios (largest remainders), until the budget or the history is exhausted."""
    counts = np.asarray(counts, dtype=np.int64)
    w = np.asarray(ratios, dtype=np.float64)
    if len(w) != len(counts) or (w < 0).any():
        raise ValueError("need one non-negative ratio per cluster")
    quota = np.zeros(len(counts), np.int64)
    budget = min(int(H), int(counts.sum()))
    while quota.sum() < budget:
        room = counts - quota
        live = (room > 0) & (w > 0)
        if not live.any():  # only zero-ratio clusters have items left: share them evenly
            live = room > 0
            weights = live.astype(np.float64)
        else:
            weights = np.where(live, w, 0.0)
        left = budget - int(quota.sum())
        exact = left * weights / weights.sum()
        add = np.floor(exact).astype(np.int64)
        short = left - int(add.sum())
        order = np.lexsort((np.arange(len(counts)), -(exact - add)))
        order = order[live[order]]
        add[order[:short]] += 1
        quota += np.minimum(add, room)
    return quota


def dp(
    history_clusters: np.ndarray,
    ratios: np.ndarray,
    H: int,
    seed: int,
    user: int,
) -> np.ndarray:
    """Knapsack/DP diversity selection with per-cluster ``ratios`` indexed by cluster label
    (``ratios[label]``; labels outside ``ratios`` get 0). Positions, chronological."""
    n = len(history_clusters)
    if n <= H:
        return np.arange(n)
    labels = np.asarray(history_clusters, dtype=np.int64)
    clusters, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r = np.asarray(ratios, dtype=np.float64)
    w = np.array([r[c] if 0 <= c < len(r) else 0.0 for c in clusters])
    quota = dp_quotas(counts, w, int(H))
    return _fill_by_quota(inverse, quota, int(H), _rng(seed, user))


def knapsack_ratios(
    table: np.ndarray, step: int = 5, capacity: int = 100
) -> tuple[np.ndarray, float]:
    """Per-cluster budget shares maximising the summed utility: ``table[c, j]`` is the utility
    of giving cluster ``c`` the share ``(j + 1) * step`` percent; every cluster gets exactly one
    share and the shares sum to ``capacity`` percent (multiple-choice knapsack, exact DP).

    Returns ``(ratios as fractions of 1, best total utility)``; ties go to the smaller share of
    the earlier cluster. Raises ``ValueError`` when no assignment fills the capacity.
    """
    t = np.asarray(table, dtype=np.float64)
    n_c, n_r = t.shape
    if capacity % step:
        raise ValueError(f"capacity {capacity} is not a multiple of step {step}")
    cap = capacity // step
    best = np.full((n_c + 1, cap + 1), -np.inf)
    best[0, 0] = 0.0
    for c in range(n_c):
        for j in range(n_r):
            size = j + 1
            if size > cap:
                break
            cand = best[c, : cap + 1 - size] + t[c, j]
            best[c + 1, size:] = np.maximum(best[c + 1, size:], cand)
    if not np.isfinite(best[n_c, cap]):
        raise ValueError(
            f"{n_c} clusters with shares of {step}..{n_r * step}% cannot sum to {capacity}%"
        )
    shares = np.zeros(n_c, np.int64)
    left = cap
    for c in range(n_c - 1, -1, -1):
        for j in range(n_r):
            size = j + 1
            if size <= left and np.isclose(best[c, left - size] + t[c, j], best[c + 1, left]):
                shares[c], left = size, left - size
                break
    return shares * step / capacity, float(best[n_c, cap])


def ratio_table(
    histories: list[np.ndarray],
    history_clusters: list[np.ndarray],
    utility,
    H: int,
    k: int,
    seed: int,
    step: int = 5,
    n_ratios: int = 10,
) -> np.ndarray:
    """Utility table for :func:`knapsack_ratios`: ``table[c, j]`` is ``utility(selections)``
    when each user's prompt history keeps ``round((j + 1) * step% * H)`` items of cluster ``c``
    only (uniformly drawn, seeded per user).

    ``histories[u]`` are item indices, ``history_clusters[u]`` their cluster labels (``0..k-1``);
    ``utility(list of selected item arrays) -> float`` must measure on VALID (e.g.
    :func:`hit_utility` on the users' validation items), never on test.
    """
    table = np.zeros((k, n_ratios))
    for c in range(k):
        for j in range(n_ratios):
            size = int(round((j + 1) * step / 100 * H))
            picks = []
            for u, (items, labels) in enumerate(zip(histories, history_clusters)):
                pos = np.flatnonzero(np.asarray(labels) == c)
                order = _rng(seed, u * k + c).permutation(len(pos))
                picks.append(np.asarray(items)[np.sort(pos[order[:size]])])
            table[c, j] = float(utility(picks))
    return table


def hit_utility(score_rows, candidates: list[np.ndarray], targets: list[np.ndarray], k: int = 10):
    """A VALID utility for :func:`ratio_table`: mean Hit@k of the candidates re-ranked by
    ``score_rows(selected histories) -> [n_users, n_items]`` against ``targets`` (the users'
    validation items; users without one are skipped)."""
    keep = [u for u, t in enumerate(targets) if len(t)]

    def utility(selections: list[np.ndarray]) -> float:
        if not keep:
            return 0.0
        s = np.asarray(score_rows([selections[u] for u in keep]), dtype=np.float64)
        hits = 0
        for row, u in zip(s, keep):
            cand = np.asarray(candidates[u])
            top = cand[np.argsort(-row[cand], kind="stable")[:k]]
            hits += bool(np.isin(top, targets[u]).any())
        return hits / len(keep)

    return utility


def check(name: str, ratios: np.ndarray | None = None) -> None:
    """``ValueError`` unless ``name`` is a strategy of :data:`ALL_STRATEGIES` that can run
    (``dp`` needs its per-cluster ``ratios``)."""
    if name not in ALL_STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(ALL_STRATEGIES)}, got {name!r}")
    if name == "dp" and ratios is None:
        raise ValueError("the dp strategy needs per-cluster ratios (knapsack_ratios on VALID)")


def select(
    name: str,
    *,
    history_vectors: np.ndarray,
    history_clusters: np.ndarray,
    ratings: np.ndarray,
    candidate_vectors: np.ndarray,
    H: int,
    seed: int,
    user: int,
    ratios: np.ndarray | None = None,
) -> np.ndarray:
    """Positions (chronological) chosen by strategy ``name`` (one of :data:`ALL_STRATEGIES`)."""
    check(name, ratios)
    n = len(history_clusters)
    if name == "preference":
        return preference(history_clusters, ratings, H, seed, user)
    if name == "diversity":
        return diversity(history_vectors, history_clusters, ratings, H)
    if name == "attention":
        return attention(history_vectors, candidate_vectors, ratings, H)[0]
    if name == "none":
        return no_selection(n, H)
    if name == "random":
        return random_selection(n, H, seed, user)
    if name == "average":
        return average(history_clusters, H, seed, user)
    if name == "dp":
        return dp(history_clusters, ratios, H, seed, user)
    raise AssertionError(f"strategy {name!r} of ALL_STRATEGIES has no selection here")
