"""Top-K ranking metrics with RecBole's definitions (binary relevance).

For one user let ``hit_r`` be 1 if the item at rank ``r`` (1-based) of the top-K list is a test
item of that user and 0 otherwise, and ``|T|`` the number of the user's test items (all of them,
not capped at K):

- ``recall@K    = sum_{r<=K} hit_r / |T|``
- ``precision@K = sum_{r<=K} hit_r / K``
- ``hit@K       = 1 if sum_{r<=K} hit_r > 0 else 0``
- ``mrr@K       = 1 / r*`` where ``r*`` is the rank of the first hit within the top K (0 if none)
- ``ndcg@K      = DCG@K / IDCG@K`` with ``DCG@K = sum_{r<=K} hit_r / log2(r + 1)`` and the ideal
  ``IDCG@K = sum_{r<=min(|T|, K)} 1 / log2(r + 1)`` (all test items ranked first).

Users with ``|T| = 0`` are undefined; callers drop them before averaging (as RecBole does, which
evaluates only users that have at least one test item).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

METRICS = ("recall", "ndcg", "hit", "mrr", "precision")


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def ranking_metrics(
    topk_hits: np.ndarray | torch.Tensor,
    n_pos: np.ndarray | torch.Tensor,
    ks: Iterable[int] = (5, 10, 20),
) -> dict[str, np.ndarray]:
    """Per-user ranking metrics from a hit matrix.

    Args:
        topk_hits: bool ``[n_users, K]``; entry ``[u, r]`` says whether the item ranked ``r + 1``
            for user ``u`` is one of its test items. ``K`` must be at least ``max(ks)``;
            shorter rows (catalogue smaller than K) may be padded with ``False``.
        n_pos: int ``[n_users]``, number of test items per user (must be >= 1).
        ks: cut-offs.

    Returns:
        ``{"recall@K": float64[n_users], "ndcg@K": ..., "hit@K": ..., "mrr@K": ...,
        "precision@K": ...}`` for every K in ``ks`` (per user, not averaged).
    """
    hits = _as_numpy(topk_hits).astype(bool)
    n_pos = _as_numpy(n_pos).astype(np.int64)
    if hits.ndim != 2 or hits.shape[0] != n_pos.shape[0]:
        raise ValueError(f"topk_hits {hits.shape} and n_pos {n_pos.shape} do not match")
    if np.any(n_pos < 1):
        raise ValueError("every user needs at least one test item (n_pos >= 1)")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    max_k = ks[-1]
    if hits.shape[1] < max_k:
        raise ValueError(f"topk_hits has {hits.shape[1]} columns, need max(ks) = {max_k}")
    hits = hits[:, :max_k].astype(np.float64)

    ranks = np.arange(1, max_k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    cum_hits = np.cumsum(hits, axis=1)
    cum_dcg = np.cumsum(hits * discount, axis=1)
    ideal = np.cumsum(discount)
    # Rank of the first hit (1-based); max_k + 1 when there is none.
    any_hit = hits.any(axis=1)
    first = np.where(any_hit, hits.argmax(axis=1) + 1, max_k + 1)

    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        out[f"recall@{k}"] = h / n_pos
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / ideal[np.minimum(n_pos, k) - 1]
        out[f"hit@{k}"] = (h > 0).astype(np.float64)
        out[f"mrr@{k}"] = np.where(first <= k, 1.0 / first, 0.0)
        out[f"precision@{k}"] = h / k
    return out
