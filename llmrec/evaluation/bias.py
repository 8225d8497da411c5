"""Propagation bias: the damage an unlearning method does to users who behave like the forgotten.

docs/design.md §5.2 (our definition; CRAGRU names the effect without a metric):

* forgotten users U_f (or owners of forgotten interactions);
* neighbours N = ∪_{u ∈ U_f} top-k users by cosine similarity of the *original* interaction rows
  to u, excluding U_f;
* controls C = |N| random users outside N ∪ U_f (fixed seed);
* per user v and method m against the retrained gold g:
  ΔNDCG(v) = NDCG@K_m(v) − NDCG@K_g(v),  D(v) = 1 − |Top_K^m(v) ∩ Top_K^g(v)| / K;
* report mean ΔNDCG and mean D over N and over C, and the excess (N − C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def interaction_matrix(
    n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
) -> sp.csr_matrix:
    """Binary user × item CSR matrix."""
    m = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items)
    )
    m.data[:] = 1.0
    return m


def neighbours_and_controls(
    matrix: sp.csr_matrix,
    forgotten: np.ndarray,
    k: int = 10,
    seed: int = 2020,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours (top-``k`` cosine per forgotten user, union) and as many random controls.

    ``eligible`` (bool per user) restricts both groups, e.g. to users with test interactions.
    """
    forgotten = np.unique(np.asarray(forgotten, dtype=np.int64))
    n_users = matrix.shape[0]
    ok = np.ones(n_users, dtype=bool) if eligible is None else eligible.astype(bool).copy()
    ok[forgotten] = False
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    sims = (matrix[forgotten] @ matrix.T).toarray() / (norms[forgotten, None] * norms[None, :])
    sims[:, ~ok] = -np.inf
    kk = min(k, int(ok.sum()))
    neigh: set[int] = set()
    for row in sims:
        top = np.argpartition(-row, kk - 1)[:kk] if kk > 0 else []
        neigh.update(int(v) for v in top if np.isfinite(row[v]))
    neighbours = np.array(sorted(neigh), dtype=np.int64)
    pool = np.flatnonzero(ok)
    pool = np.setdiff1d(pool, neighbours)
    rng = np.random.default_rng(seed)
    controls = np.sort(rng.choice(pool, size=min(len(neighbours), len(pool)), replace=False))
    return neighbours, controls


@dataclass
class PerUser:
    """Per-user ranking results of one model: users, NDCG@K and top-K lists (aligned rows)."""

    users: np.ndarray
    ndcg: np.ndarray
    topk: np.ndarray

    @classmethod
    def from_eval(cls, res: dict, k: int = 10) -> PerUser:
        """From ``evaluate_ranking(..., return_per_user=True)``."""
        return cls(
            np.asarray(res["per_user"]["users"]),
            np.asarray(res["per_user"][f"ndcg@{k}"]),
            np.asarray(res["topk"])[:, :k],
        )

    def take(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows for ``users`` that this result covers: (users, ndcg, topk)."""
        pos = np.searchsorted(self.users, users)
        pos = np.clip(pos, 0, len(self.users) - 1)
        hit = self.users[pos] == users
        return users[hit], self.ndcg[pos[hit]], self.topk[pos[hit]]


def per_user_deltas(
    m: PerUser, g: PerUser, users: np.ndarray, k: int = 10
) -> dict[str, np.ndarray]:
    """ΔNDCG(v) and D(v) for ``users`` covered by both results."""
    users = np.intersect1d(np.intersect1d(users, m.users), g.users)
    _, nm, tm = m.take(users)
    _, ng, tg = g.take(users)
    overlap = np.array(
        [len(np.intersect1d(a[:k], b[:k])) for a, b in zip(tm, tg)], dtype=np.float64
    )
    return {"users": users, "delta_ndcg": nm - ng, "divergence": 1.0 - overlap / k}


def propagation_bias(
    m: PerUser, g: PerUser, neighbours: np.ndarray, controls: np.ndarray, k: int = 10
) -> dict:
    """Mean ΔNDCG@K and top-K divergence over neighbours and controls, and their excess."""
    n = per_user_deltas(m, g, neighbours, k)
    c = per_user_deltas(m, g, controls, k)

    def mean(x: np.ndarray) -> float:
        return float(np.mean(x)) if len(x) else float("nan")

    out = {
        "k": k,
        "n_neighbours": len(n["users"]),
        "n_controls": len(c["users"]),
        "neighbours": {"delta_ndcg": mean(n["delta_ndcg"]), "divergence": mean(n["divergence"])},
        "controls": {"delta_ndcg": mean(c["delta_ndcg"]), "divergence": mean(c["divergence"])},
    }
    out["excess"] = {
        key: out["neighbours"][key] - out["controls"][key] for key in ("delta_ndcg", "divergence")
    }
    out["per_user"] = {
        "neighbours": {kk: v.tolist() for kk, v in n.items()},
        "controls": {kk: v.tolist() for kk, v in c.items()},
    }
    return out
