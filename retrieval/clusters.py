"""Seeded, deterministic k-means over item embeddings (the clusters CRAGRU's strategies use).

Plain NumPy (float64, k-means++ initialisation from ``numpy.random.default_rng(seed)``, Lloyd
iterations, ties to the lowest centroid index) so that the same vectors and seed always give the
same clusters, on any thread count. Clusters cover the *retained* items only: forgetting an item
re-clusters the remaining ones, exactly as a build from scratch would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from retrieval.threads import one_blas_thread


@dataclass
class ItemClusters:
    """``labels[item]`` (-1 for items not clustered) and ``centroids`` ``[k, d]``."""

    labels: np.ndarray
    centroids: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centroids)

    def equals(self, other: ItemClusters) -> bool:
        return np.array_equal(self.labels, other.labels) and np.array_equal(
            self.centroids, other.centroids
        )


@one_blas_thread
def kmeans(
    x: np.ndarray, k: int, seed: int = 2020, iters: int = 50, tol: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, centroids)`` of ``x`` ``[n, d]`` into ``min(k, n)`` clusters."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    k = int(min(k, n))
    if k <= 0:
        return np.zeros(n, np.int64), np.zeros((0, x.shape[1]))
    x_sq = np.einsum("ij,ij->i", x, x)
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, x.shape[1]))
    first = int(rng.integers(n))
    centroids[0] = x[first]
    closest = np.maximum(x_sq - 2.0 * x @ x[first] + x_sq[first], 0.0)
    for c in range(1, k):
        total = closest.sum()
        pick = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        centroids[c] = x[pick]
        closest = np.minimum(closest, np.maximum(x_sq - 2.0 * x @ x[pick] + x_sq[pick], 0.0))

    def assign(c: np.ndarray) -> np.ndarray:
        # argmin_j |x - c_j|^2 = argmin_j (|c_j|^2 - 2 x.c_j); ties go to the lowest j
        return (np.einsum("ij,ij->i", c, c)[None, :] - 2.0 * x @ c.T).argmin(axis=1)

    for _ in range(iters):
        labels = assign(centroids)
        sums = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n)) @ x
        counts = np.bincount(labels, minlength=k)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
        shift = float(((new - centroids) ** 2).sum())
        centroids = new
        if shift <= tol:
            break
    return assign(centroids).astype(np.int64), centroids


def cluster_items(
    vectors: np.ndarray, items: np.ndarray, n_items: int, k: int, seed: int
) -> ItemClusters:
    """Cluster the rows ``vectors`` (embeddings of ``items``) into at most ``k`` groups."""
    labels = np.full(n_items, -1, dtype=np.int64)
    lab, centroids = kmeans(vectors, k, seed)
    labels[np.asarray(items, dtype=np.int64)] = lab
    return ItemClusters(labels, centroids)
