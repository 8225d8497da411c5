"""Privacy attacks on model scores: forgotten-pair rank and membership inference.

Both take a ``score_fn(users) -> [len(users), n_items]`` (a model's ``score``), so any scorer is
attacked the same way.

**Forgotten-pair rank.** For a pair ``(u, i)`` the rank of ``i`` in ``u``'s score row among all
items except ``exclude`` pairs of ``u`` (normally the retained train items, which a model is
expected to rank high); ties count half, so a constant row ranks every item in the middle.
Rank 1 is the top. Forgetting should push forgotten pairs *down* (larger ranks), as far as a
model that never saw them would (the retrained model).

**Membership inference (the attack).** A score-based attacker in the shadow-training style:

1. Features of a pair ``(u, i)`` come only from ``u``'s score row ``s``: the raw score
   ``s_i``, its per-user z-score ``(s_i - mean s) / std s`` and its per-user percentile
   ``(#{s_j < s_i} + #{s_j = s_i}/2) / (n_items - 1)`` — scale-free features, so the attack
   transfers across users.
2. The attacker (logistic regression on standardised features, or gradient boosting) is trained
   on *shadow* pairs whose status is known: members = retained train pairs (the model was
   certainly trained on them), non-members = pairs the user never interacted with in the whole
   dataset, one per member, same users.
3. It is evaluated on *target* pairs: the forgotten train pairs (label 1) against never-interacted
   pairs of the same users (label 0, one per forgotten pair). The result is the ROC AUC.

An unlearned model should give the AUC the retrained model gives (≈ 0.5 when forgetting whole
histories; higher when a forgotten pair is predictable from the retained data). The AUC of the
percentile alone (``auc_threshold``, no training) is reported too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from llmrec.evaluation import UserItemCSR

ScoreFn = Callable[[np.ndarray], "torch.Tensor | np.ndarray"]


def _rows(score_fn: ScoreFn, users: np.ndarray, n_items: int) -> torch.Tensor:
    out = torch.as_tensor(score_fn(users)).detach().to("cpu", torch.float32)
    if out.shape != (len(users), n_items):
        raise ValueError(f"score_fn returned {tuple(out.shape)}, expected {(len(users), n_items)}")
    return out


def pair_ranks(
    score_fn: ScoreFn,
    n_items: int,
    users: np.ndarray,
    items: np.ndarray,
    exclude_users: np.ndarray | None = None,
    exclude_items: np.ndarray | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """1-based rank of ``items[k]`` in ``users[k]``'s score row (ties count half).

    Items of the ``exclude`` pairs of that user are left out of the ranking (unless they are
    the ranked item itself). Returns float64 ranks (halves occur with ties).
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape:
        raise ValueError("users and items differ in shape")
    ranks = np.zeros(len(users), dtype=np.float64)
    if len(users) == 0:
        return ranks
    n_users = int(users.max()) + 1
    if exclude_users is not None and len(exclude_users):
        n_users = max(n_users, int(np.max(exclude_users)) + 1)
    excl = UserItemCSR(
        n_users,
        np.zeros(0, np.int64) if exclude_users is None else np.asarray(exclude_users, np.int64),
        np.zeros(0, np.int64) if exclude_items is None else np.asarray(exclude_items, np.int64),
        n_items,
    )
    uniq, inv = np.unique(users, return_inverse=True)
    for start in range(0, len(uniq), batch_size):
        batch = uniq[start : start + batch_size]
        scores = _rows(score_fn, batch, n_items)
        sel = np.flatnonzero((inv >= start) & (inv < start + len(batch)))
        target = scores[torch.as_tensor(inv[sel] - start), torch.as_tensor(items[sel])]
        r, c = excl.rows(batch)
        if r.size:
            scores[torch.as_tensor(r), torch.as_tensor(c)] = -torch.inf
        # the ranked item itself is not an excluded competitor; it ties with itself once
        for lo in range(0, len(sel), 4096):
            part = sel[lo : lo + 4096]
            t = target[lo : lo + 4096, None]
            rows = scores[torch.as_tensor(inv[part] - start)]
            greater = (rows > t).sum(1).double()
            equal = (rows == t).sum(1).double()
            self_in = rows[torch.arange(len(part)), torch.as_tensor(items[part])] == t[:, 0]
            equal -= self_in.double()
            ranks[part] = (1.0 + greater + 0.5 * equal).numpy()
    return ranks


def rank_summary(ranks: np.ndarray, n_items: int) -> dict:
    """Median / mean rank and the mean percentile position (1 = bottom) of a set of ranks."""
    if len(ranks) == 0:
        return {"n": 0, "median_rank": float("nan"), "mean_rank": float("nan")}
    return {
        "n": int(len(ranks)),
        "median_rank": float(np.median(ranks)),
        "mean_rank": float(np.mean(ranks)),
        "mean_percentile": float(np.mean((ranks - 1) / max(n_items - 1, 1))),
        "top10_share": float(np.mean(ranks <= 10)),
    }


def sample_non_members(
    users: np.ndarray, all_keys: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One item per entry of ``users`` that the user never interacted with (``all_keys``:
    sorted ``user * n_items + item`` of every known interaction)."""
    users = np.asarray(users, dtype=np.int64)
    items = rng.integers(0, n_items, len(users))
    for _ in range(1000):
        keys = users * n_items + items
        pos = np.searchsorted(all_keys, keys).clip(max=max(len(all_keys) - 1, 0))
        bad = np.flatnonzero(all_keys[pos] == keys) if len(all_keys) else np.zeros(0, np.int64)
        if bad.size == 0:
            return items
        items[bad] = rng.integers(0, n_items, bad.size)
    raise ValueError("could not sample never-interacted items (users interacted with everything)")


def pair_features(
    score_fn: ScoreFn, n_items: int, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """``[n, 3]`` attack features per pair: raw score, per-user z-score, per-user percentile."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    feats = np.zeros((len(users), 3), dtype=np.float64)
    uniq, inv = np.unique(users, return_inverse=True)
    for start in range(0, len(uniq), 512):
        batch = uniq[start : start + 512]
        s = _rows(score_fn, batch, n_items).double()
        sel = np.flatnonzero((inv >= start) & (inv < start + len(batch)))
        row = torch.as_tensor(inv[sel] - start)
        target = s[row, torch.as_tensor(items[sel])]
        mean, std = s.mean(1), s.std(1).clamp_min(1e-12)
        sr = s[row]
        less = (sr < target[:, None]).sum(1).double()
        eq = (sr == target[:, None]).sum(1).double() - 1.0
        feats[sel, 0] = target.numpy()
        feats[sel, 1] = ((target - mean[row]) / std[row]).numpy()
        feats[sel, 2] = ((less + 0.5 * eq) / max(n_items - 1, 1)).numpy()
    return feats


@dataclass
class MembershipResult:
    """AUCs of the membership attack on the target (forgotten) pairs."""

    auc: float
    auc_threshold: float
    shadow_auc: float
    n_target: int
    n_shadow: int
    attacker: str

    def to_dict(self) -> dict:
        return asdict(self)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def membership_inference(
    score_fn: ScoreFn,
    n_items: int,
    target_users: np.ndarray,
    target_items: np.ndarray,
    member_users: np.ndarray,
    member_items: np.ndarray,
    all_keys: np.ndarray,
    attacker: str = "logistic",
    n_shadow: int = 5000,
    max_target: int = 20000,
    seed: int = 2020,
) -> MembershipResult:
    """Run the shadow-trained attack (module docstring) and return its AUCs.

    Args:
        target_users, target_items: the pairs whose membership is attacked (forgotten pairs).
        member_users, member_items: known members for the shadow set (retained train pairs).
        all_keys: sorted ``user * n_items + item`` of every interaction of the dataset (pairs
            outside it are never-interacted).
        attacker: ``"logistic"`` or ``"gbdt"`` (scikit-learn gradient boosting).
    """
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    tu = np.asarray(target_users, dtype=np.int64)
    ti = np.asarray(target_items, dtype=np.int64)
    if len(tu) == 0:
        raise ValueError("no target pairs to attack")
    if len(tu) > max_target:
        pick = rng.choice(len(tu), max_target, replace=False)
        tu, ti = tu[pick], ti[pick]
    mu = np.asarray(member_users, dtype=np.int64)
    mi = np.asarray(member_items, dtype=np.int64)
    if len(mu) == 0:
        raise ValueError("no member pairs for the shadow set")
    pick = rng.choice(len(mu), min(n_shadow, len(mu)), replace=False)
    mu, mi = mu[pick], mi[pick]
    all_keys = np.sort(np.asarray(all_keys, dtype=np.int64))
    shadow_neg = sample_non_members(mu, all_keys, n_items, rng)
    target_neg = sample_non_members(tu, all_keys, n_items, rng)

    xs = pair_features(
        score_fn, n_items, np.concatenate([mu, mu]), np.concatenate([mi, shadow_neg])
    )
    ys = np.concatenate([np.ones(len(mu)), np.zeros(len(mu))])
    xt = pair_features(
        score_fn, n_items, np.concatenate([tu, tu]), np.concatenate([ti, target_neg])
    )
    yt = np.concatenate([np.ones(len(tu)), np.zeros(len(tu))])
    if attacker == "logistic":
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    elif attacker == "gbdt":
        clf = GradientBoostingClassifier(random_state=seed)
    else:
        raise ValueError(f"attacker must be 'logistic' or 'gbdt', got {attacker!r}")
    clf.fit(xs, ys)
    shadow_auc = _auc(ys, clf.predict_proba(xs)[:, 1])
    return MembershipResult(
        auc=_auc(yt, clf.predict_proba(xt)[:, 1]),
        auc_threshold=_auc(yt, xt[:, 2]),
        shadow_auc=shadow_auc,
        n_target=int(len(tu)),
        n_shadow=int(len(mu)),
        attacker=attacker,
    )
