"""Full-ranking evaluation (RecBole's protocol).

Every evaluated user is scored against the whole catalogue. Items in the *mask* pairs are set to
``-inf`` before taking the top K, so they can neither hit nor take a slot. RecBole masks every
interaction seen before the evaluated split: when evaluating **test**, pass train **and** valid
pairs as the mask; when evaluating **valid**, pass the train pairs. Items in ``exclude_items``
(e.g. forgotten items, never to be shown again) are set to ``-inf`` for every user. Metrics are
those of :mod:`llmrec.evaluation.metrics`, averaged over users with at least one test pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from llmrec.data.parts import RetainedData
from llmrec.evaluation.metrics import ranking_metrics

ScoreFn = Callable[[np.ndarray], "torch.Tensor | np.ndarray"]


class UserItemCSR:
    """Items of each user, CSR-style (``indptr`` over users, sorted unique ``indices``)."""

    def __init__(self, n_users: int, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape:
            raise ValueError(f"users {users.shape} and items {items.shape} differ in shape")
        if users.size and (users.min() < 0 or users.max() >= n_users):
            raise ValueError("user index out of range")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"item index out of range [0, {n_items})")
        keys = np.unique(users * n_items + items)
        self.n_items = int(n_items)
        self.indices = keys % n_items
        counts = np.bincount(keys // n_items, minlength=n_users)
        self.indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def counts(self, users: np.ndarray) -> np.ndarray:
        """Number of distinct items of each user."""
        return self.indptr[users + 1] - self.indptr[users]

    def rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, item)`` coordinates of the items of ``users``; ``row`` indexes into ``users``."""
        starts = self.indptr[users]
        lens = self.indptr[users + 1] - starts
        total = int(lens.sum())
        row = np.repeat(np.arange(len(users)), lens)
        offsets = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        return row, self.indices[np.repeat(starts, lens) + offsets]


def _to_scores(out: torch.Tensor | np.ndarray, n_rows: int, n_items: int) -> torch.Tensor:
    scores = torch.as_tensor(out)
    if scores.shape != (n_rows, n_items):
        raise ValueError(
            f"score_fn returned shape {tuple(scores.shape)}, expected {(n_rows, n_items)}"
        )
    # Own copy in float32: masking below writes in place and must not touch the caller's tensor.
    return scores.to(torch.float32, copy=True)


def evaluate_ranking(
    score_fn: ScoreFn,
    n_items: int,
    mask_users: np.ndarray | None,
    mask_items: np.ndarray | None,
    test_users: np.ndarray,
    test_items: np.ndarray,
    ks: Iterable[int] = (5, 10, 20),
    users: np.ndarray | None = None,
    batch_size: int = 1024,
    return_per_user: bool = False,
    exclude_items: np.ndarray | None = None,
) -> dict[str, Any]:
    """Full-ranking Recall/NDCG/Hit/MRR/Precision@K averaged over users with test pairs.

    Args:
        score_fn: maps an int64 array of user indices to scores ``[len, n_items]`` (tensor or
            array, any device).
        n_items: catalogue size.
        mask_users, mask_items: pairs whose items get ``-inf`` for that user (RecBole: train +
            valid when evaluating test, train when evaluating valid); ``None`` for no mask.
        test_users, test_items: ground-truth pairs (duplicates count once).
        ks: cut-offs.
        users: evaluate only these users (those of them with >= 1 test pair); default all users
            with a test pair.
        batch_size: users scored per ``score_fn`` call.
        return_per_user: also return ``res["per_user"]`` (``"users"`` plus one array per metric,
            users in ascending order) and ``res["topk"]`` (int64 ``[n_eval_users, max(ks)]``).
        exclude_items: items never rankable for anyone: bool mask ``[n_items]`` or index array.

    Returns:
        ``{"recall@5": float, "ndcg@10": float, ..., "n_users": int}`` (plus per-user data).
    """
    ks = sorted({int(k) for k in ks})
    max_k = ks[-1]
    test_users = np.asarray(test_users, dtype=np.int64)
    test_items = np.asarray(test_items, dtype=np.int64)
    mask_users = np.zeros(0, np.int64) if mask_users is None else np.asarray(mask_users, np.int64)
    mask_items = np.zeros(0, np.int64) if mask_items is None else np.asarray(mask_items, np.int64)
    cand = [test_users, mask_users] + ([] if users is None else [np.asarray(users, np.int64)])
    n_users = int(max((c.max() for c in cand if c.size), default=-1)) + 1
    test = UserItemCSR(n_users, test_users, test_items, n_items)
    mask = UserItemCSR(n_users, mask_users, mask_items, n_items)

    eval_users = np.unique(test_users)
    if users is not None:
        eval_users = np.intersect1d(eval_users, np.asarray(users, dtype=np.int64))
    n_pos = test.counts(eval_users)

    excl = None
    if exclude_items is not None:
        ex = np.asarray(exclude_items)
        excl = np.flatnonzero(ex) if ex.dtype == bool else ex.astype(np.int64)
        excl = torch.as_tensor(excl)

    k_eff = min(max_k, n_items)
    topk_all = np.zeros((len(eval_users), max_k), dtype=np.int64)
    hits_all = np.zeros((len(eval_users), max_k), dtype=bool)
    with torch.no_grad():
        for start in range(0, len(eval_users), batch_size):
            batch = eval_users[start : start + batch_size]
            scores = _to_scores(score_fn(batch), len(batch), n_items)
            dev = scores.device
            row, col = mask.rows(batch)
            if row.size:
                scores[
                    torch.as_tensor(row, device=dev), torch.as_tensor(col, device=dev)
                ] = -torch.inf
            if excl is not None and excl.numel():
                scores[:, excl.to(dev)] = -torch.inf
            top = torch.topk(scores, k_eff, dim=1).indices
            truth = torch.zeros(len(batch), n_items, dtype=torch.bool, device=dev)
            row, col = test.rows(batch)
            truth[torch.as_tensor(row, device=dev), torch.as_tensor(col, device=dev)] = True
            sl = slice(start, start + len(batch))
            hits_all[sl, :k_eff] = torch.gather(truth, 1, top).cpu().numpy()
            topk_all[sl, :k_eff] = top.cpu().numpy()
    if k_eff < max_k:
        topk_all[:, k_eff:] = -1

    per_user = ranking_metrics(hits_all, n_pos, ks)
    res: dict[str, Any] = {}
    for name in ("recall", "ndcg", "hit", "mrr", "precision"):
        for k in ks:
            vals = per_user[f"{name}@{k}"]
            res[f"{name}@{k}"] = float(vals.mean()) if vals.size else 0.0
    res["n_users"] = int(len(eval_users))
    if return_per_user:
        res["per_user"] = {"users": eval_users, **per_user}
        res["topk"] = topk_all
    return res


def evaluate_model(
    model,
    data: RetainedData,
    part: str = "test",
    users: np.ndarray | None = None,
    ks=(5, 10, 20),
    return_per_user: bool = False,
    score_fn=None,
) -> dict:
    """RecBole full ranking on the retained ``part`` ("test" or "valid").

    Test masks retained train + valid items (RecBole's behaviour), valid masks train items.
    Forgotten items are never ranked; forgotten users are not evaluated.
    """
    if part == "test":
        tu, ti = data.test
        mu = np.concatenate([data.train[0], data.valid[0]])
        mi = np.concatenate([data.train[1], data.valid[1]])
    elif part == "valid":
        tu, ti = data.valid
        mu, mi = data.train
    else:
        raise ValueError(f"part must be 'test' or 'valid', got {part!r}")
    alive = np.flatnonzero(~data.view.forgotten_users)
    users = alive if users is None else np.intersect1d(np.asarray(users, dtype=np.int64), alive)
    return evaluate_ranking(
        score_fn or model.score,
        data.view.dataset.n_items,
        mu,
        mi,
        tu,
        ti,
        ks=ks,
        users=users,
        return_per_user=return_per_user,
        exclude_items=data.view.forgotten_items if data.view.forgotten_items.any() else None,
    )


def ranking_first_scores(
    items: np.ndarray,
    base: np.ndarray,
    n_items: int,
    *,
    floor: float = -1e12,
    dtype: type = np.float64,
) -> np.ndarray:
    """One user's score row that ranks ``items`` first (in their order), then every other item
    in the order of ``base`` (e.g. the candidate model's scores), min-max scaled below the
    ranking; items whose ``base`` is not finite get ``floor``. Turns a served list into a score
    function for :func:`evaluate_ranking`."""
    s = np.full(n_items, floor, dtype=dtype)
    finite = np.isfinite(base)
    if finite.any():
        lo, hi = base[finite].min(), base[finite].max()
        s[finite] = (base[finite] - lo) / ((hi - lo) or 1.0) - 2.0
    s[items] = 1e6 - np.arange(len(items))
    return s
