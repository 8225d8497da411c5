"""Data partitions for shard-based exact unlearning (SISA, RecEraser).

A partition assigns every *unit* to one of ``n_shards`` shards; the unit is a user, an item or
an interaction (a ``(user, item)`` pair). The shard of a training pair is the shard of its unit,
so a shard's data is a fixed subset of the training pairs, and removing pairs only ever removes
them from the shards they belong to.

* :func:`random_partition`: a seeded random permutation cut into equal parts (SISA);
* :func:`balanced_kmeans`: RecEraser's balanced k-means on pre-trained embeddings (users: user
  embeddings; items: item embeddings; interactions: the concatenated user and item embeddings).
  Anchors start at ``n_shards`` random units; each iteration assigns units to anchors in order
  of increasing distance with every shard capped at ``ceil(n / n_shards)`` units, then moves
  each anchor to the mean of its units. The capped greedy assignment is computed as a
  capacitated deferred acceptance (every unit proposes to its nearest anchor that has not
  rejected it, every anchor keeps its closest proposers up to capacity): with preferences
  given by one symmetric distance the stable assignment is unique, so this is the same
  assignment as the paper's sorted-pair greedy, in at most ``n_shards`` vectorised rounds.
"""

from __future__ import annotations

import math

import numpy as np

UNITS = ("user", "item", "interaction")


def random_partition(n_units: int, n_shards: int, seed: int) -> np.ndarray:
    """Shard per unit: a seeded permutation cut into ``n_shards`` parts of equal size (±1)."""
    if n_shards < 1:
        raise ValueError("n_shards must be at least 1")
    perm = np.random.default_rng(seed).permutation(n_units)
    shard = np.empty(n_units, dtype=np.int64)
    shard[perm] = np.arange(n_units) % n_shards
    return shard


def capped_assignment(dist: np.ndarray, capacity: int) -> np.ndarray:
    """Assign each row (unit) to a column (anchor), at most ``capacity`` rows per column, by
    increasing distance (the stable assignment of the capacitated deferred acceptance)."""
    n, k = dist.shape
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} anchors cannot hold {n} units")
    prefs = np.argsort(dist, axis=1, kind="stable")  # each unit's anchors, nearest first
    nxt = np.zeros(n, dtype=np.int64)  # index into prefs of the next anchor to propose to
    held = np.full(n, -1, dtype=np.int64)
    rows = np.arange(n)
    free = rows
    while free.size:
        target = prefs[free, nxt[free]]
        nxt[free] += 1
        # candidates per anchor: the units it holds plus the new proposers
        cand = np.concatenate([rows[held >= 0], free])
        anchor = np.concatenate([held[held >= 0], target])
        d = dist[cand, anchor]
        order = np.lexsort((cand, d, anchor))  # by anchor, then distance (ties: unit id)
        cand, anchor = cand[order], anchor[order]
        start = np.searchsorted(anchor, np.arange(k))
        rank = np.arange(len(cand)) - start[anchor]
        keep = rank < capacity
        held[:] = -1
        held[cand[keep]] = anchor[keep]
        free = cand[~keep]
    return held


def balanced_kmeans(
    emb: np.ndarray, n_shards: int, seed: int, iterations: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """RecEraser's balanced k-means (module docstring): ``(shard per unit, anchors)``."""
    x = np.asarray(emb, dtype=np.float64)
    n = len(x)
    if n_shards < 1 or n_shards > n:
        raise ValueError(f"need 1 <= n_shards <= {n}, got {n_shards}")
    rng = np.random.default_rng(seed)
    anchors = x[rng.choice(n, n_shards, replace=False)].copy()
    capacity = math.ceil(n / n_shards)
    shard = np.zeros(n, dtype=np.int64)
    sq = (x * x).sum(1)
    for _ in range(max(1, int(iterations))):
        dist = sq[:, None] - 2 * x @ anchors.T + (anchors * anchors).sum(1)[None, :]
        shard = capped_assignment(dist, capacity)
        for s in range(n_shards):
            members = shard == s
            if members.any():
                anchors[s] = x[members].mean(0)
    return shard, anchors
