"""CURE4Rec's fairness metrics of an unlearned recommender (Chen et al., arXiv 2408.14393).

* **A-IGF** (active-inactive group fairness): mean NDCG@K of the *active* users (the 5% with the
  most retained training interactions) minus that of the others (CURE4Rec ``read.py``: users by
  training count, the first ``int(n * 5 / 100)`` are active). Positive: the model serves heavy
  users better.
* **shardGF**: the (population) variance of the per-shard mean NDCG@K over a partition of the
  users (a sharded method's own shards; otherwise a fixed seeded random partition): how unevenly
  the shards are served.

NDCG is either RecBole's (IDCG over ``min(|test|, K)`` relevant items, the toolkit's protocol) or
CURE4Rec's ``utils.ndcg`` (IDCG over *all* ``|test|`` items, so a user with more test items than
K can never reach 1); the choice is ``ndcg="recbole"|"cure"``.
"""

from __future__ import annotations

import numpy as np

from llmrec.data.partition import random_partition

#: fraction of the users CURE4Rec calls active
ACTIVE_FRACTION = 0.05
#: shards of the default partition when a method has none of its own (SISA's default count)
DEFAULT_SHARDS = 10


def active_mask(train_counts: np.ndarray, fraction: float = ACTIVE_FRACTION) -> np.ndarray:
    """Bool per user: among users with training data, the ``int(n * fraction)`` most active
    (ties broken by user index)."""
    counts = np.asarray(train_counts)
    have = np.flatnonzero(counts > 0)
    n_active = len(have) * round(fraction * 100) // 100  # CURE4Rec: int(n * 5 / 100)
    order = have[np.lexsort((have, -counts[have]))]
    mask = np.zeros(len(counts), dtype=bool)
    mask[order[:n_active]] = True
    return mask


def cure_ndcg(
    topk: np.ndarray, users: np.ndarray, test_users: np.ndarray, test_items: np.ndarray, k: int
) -> np.ndarray:
    """Per-user NDCG@k with CURE4Rec's normalisation: DCG of the hits in the top k over the
    IDCG of *all* the user's test items (not capped at k)."""
    users = np.asarray(users, dtype=np.int64)
    order = np.argsort(test_users, kind="stable")
    tu, ti = np.asarray(test_users)[order], np.asarray(test_items)[order]
    lo, hi = np.searchsorted(tu, users, "left"), np.searchsorted(tu, users, "right")
    disc = 1.0 / np.log2(np.arange(2, max(int((hi - lo).max(initial=0)), k) + 2))
    out = np.zeros(len(users))
    for r, (a, b) in enumerate(zip(lo, hi)):
        if b == a:
            continue
        hit = np.isin(topk[r, :k], ti[a:b])
        out[r] = disc[:k][hit].sum() / disc[: b - a].sum()
    return out


def a_igf(users: np.ndarray, ndcg: np.ndarray, active: np.ndarray) -> dict:
    """NDCG of the active evaluated users minus that of the inactive ones."""
    act = active[users]
    mean = lambda x: float(np.mean(x)) if len(x) else float("nan")  # noqa: E731
    a, i = mean(ndcg[act]), mean(ndcg[~act])
    return {
        "value": a - i,
        "active_ndcg": a,
        "inactive_ndcg": i,
        "n_active": int(act.sum()),
        "n_inactive": int((~act).sum()),
    }


def shard_gf(users: np.ndarray, ndcg: np.ndarray, shards: np.ndarray) -> dict:
    """Variance of the per-shard mean NDCG (shards with at least one evaluated user)."""
    s = np.asarray(shards)[users]
    labels = np.unique(s)
    per = np.array([ndcg[s == lab].mean() for lab in labels])
    return {
        "value": float(np.var(per)) if len(per) else float("nan"),
        "per_shard": per.tolist(),
        "n_shards": int(len(labels)),
    }


def default_shards(n_users: int, seed: int, n_shards: int = DEFAULT_SHARDS) -> np.ndarray:
    """The seeded random user partition used when a method has no shards of its own."""
    return random_partition(n_users, n_shards, seed)


def fairness(
    res: dict,
    test: tuple[np.ndarray, np.ndarray],
    train_counts: np.ndarray,
    shards: np.ndarray,
    k: int = 10,
    ndcg: str = "recbole",
    own_shards: bool = True,
) -> dict:
    """A-IGF and shardGF of one evaluation (``evaluate_ranking(..., return_per_user=True)``).

    ``test``: the test pairs evaluated; ``train_counts``: retained training pairs per user
    (defines the active users); ``shards``: shard per user.
    """
    users = np.asarray(res["per_user"]["users"], dtype=np.int64)
    if ndcg == "recbole":
        per = np.asarray(res["per_user"][f"ndcg@{k}"], dtype=np.float64)
    elif ndcg == "cure":
        per = cure_ndcg(np.asarray(res["topk"]), users, test[0], test[1], k)
    else:
        raise ValueError(f"ndcg must be 'recbole' or 'cure', got {ndcg!r}")
    return {
        "ndcg": ndcg,
        "k": k,
        "per_user": {"users": users.tolist(), "ndcg": per.tolist()},
        "a_igf": a_igf(users, per, active_mask(train_counts)),
        "shard_gf": {**shard_gf(users, per, shards), "own_shards": bool(own_shards)},
    }
