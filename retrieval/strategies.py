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
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("preference", "diversity", "attention")


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
