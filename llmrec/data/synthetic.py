"""Synthetic RecBole atomic datasets at any size (10^5 … 10^7 interactions and beyond).

Users have power-law activity, items power-law popularity inside genre clusters, and user
attributes (gender, age, occupation) shift the genre preferences, so attribute inference (and
attribute unlearning) is measurable. Items get a title, a year and genres for text encoders.
Generation is vectorised: 10^7 interactions take seconds plus the time to write the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GENRES = (
    "Action Adventure Animation Children Comedy Crime Documentary Drama Fantasy Noir Horror "
    "Musical Mystery Romance SciFi Thriller War Western Biography Sport"
).split()
AGE_GROUPS = ("1", "18", "25", "35", "45", "50", "56")  # ML-1M's age codes
OCCUPATIONS = tuple(f"occ{k}" for k in range(12))
_WORDS = (
    "silent crimson river last night city dream shadow garden iron golden empire secret winter "
    "summer broken lost wild blue house road star ocean fire stone glass heart storm moon king "
    "queen ghost machine letter journey return"
).split()


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of a synthetic dataset; users/items default to n/50 and n/100."""

    interactions: int
    users: int | None = None
    items: int | None = None
    clusters: int = 20
    user_alpha: float = 1.2  # Pareto shape of user activity
    item_alpha: float = 1.1  # Zipf exponent of item popularity inside a cluster
    attribute_strength: float = 1.5
    min_per_user: int = 5
    seed: int = 2020

    def resolved(self) -> tuple[int, int]:
        u = self.users or max(50, self.interactions // 50)
        i = self.items or max(200, self.interactions // 100)
        return u, i


def generate(spec: SyntheticSpec) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return ``(inter, user, item)`` frames with RecBole field names."""
    rng = np.random.default_rng(spec.seed)
    n_users, n_items = spec.resolved()
    g = spec.clusters
    # users: attributes and attribute-driven cluster preferences
    gender = rng.integers(0, 2, n_users)
    age = rng.integers(0, len(AGE_GROUPS), n_users)
    occ = rng.integers(0, len(OCCUPATIONS), n_users)
    effects = [
        rng.normal(0, spec.attribute_strength, (k, g))
        for k in (2, len(AGE_GROUPS), len(OCCUPATIONS))
    ]
    logits = (
        rng.normal(0, 1.0, (n_users, g)) + effects[0][gender] + effects[1][age] + effects[2][occ]
    )
    pref = np.exp(logits - logits.max(1, keepdims=True))
    pref /= pref.sum(1, keepdims=True)
    # items: cluster and popularity rank inside it
    item_cluster = rng.integers(0, g, n_items)
    order = np.argsort(item_cluster, kind="stable")
    sizes = np.bincount(item_cluster, minlength=g)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(n_items) - starts[item_cluster[order]]
    weight = np.empty(n_items)
    weight[order] = 1.0 / (rank + 1.0) ** spec.item_alpha
    # activity: Pareto, scaled to the interaction budget
    act = rng.pareto(spec.user_alpha, n_users) + 1.0
    act = np.maximum(spec.min_per_user, np.floor(act / act.sum() * spec.interactions)).astype(
        np.int64
    )
    act = np.minimum(act, max(spec.min_per_user, n_items // 3))
    # cumulative popularity inside each cluster (items ordered by cluster)
    w_sorted = weight[order]
    cum_w = np.zeros(n_items)
    for c in range(g):
        s, e = starts[c], starts[c] + sizes[c]
        if e > s:
            cum_w[s:e] = np.cumsum(w_sorted[s:e]) / w_sorted[s:e].sum()
    cum_pref = np.cumsum(pref, axis=1)
    # sample, de-duplicate, top up until the budget of distinct pairs is met
    keys = np.zeros(0, dtype=np.int64)
    want = act.copy()
    cap = max(spec.min_per_user, n_items // 3)
    for _ in range(20):
        users = np.repeat(np.arange(n_users), want)
        items = _sample_items(rng, users, cum_pref, cum_w, sizes, starts, order, item_cluster)
        keys = np.unique(np.concatenate([keys, users.astype(np.int64) * n_items + items]))
        if len(keys) >= spec.interactions:
            break
        have = np.bincount(keys // n_items, minlength=n_users)
        missing = spec.interactions - len(keys)
        if np.maximum(act - have, 0).sum() < missing:  # popular items saturate: raise activity
            act = np.minimum(np.ceil(act * (1.0 + missing / len(keys))), cap).astype(np.int64)
        want = np.maximum(act - have, 0) + (have < act)
    if len(keys) > spec.interactions:
        keys = np.sort(rng.choice(keys, spec.interactions, replace=False))
    keys = rng.permutation(keys)
    users, items = keys // n_items, keys % n_items
    ts = 1_000_000_000 + np.sort(rng.integers(0, 10**8, len(users)))
    affinity = pref[users, item_cluster[items]] * g
    rating = np.clip(np.round(2.5 + np.log(affinity + 1e-3) + rng.normal(0, 1, len(users))), 1, 5)
    inter = pd.DataFrame(
        {
            "user_id": users + 1,
            "item_id": items + 1,
            "rating": rating,
            "timestamp": ts.astype(np.float64),
        }
    )
    user = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1),
            "age": np.asarray(AGE_GROUPS)[age],
            "gender": np.where(gender == 0, "M", "F"),
            "occupation": np.asarray(OCCUPATIONS)[occ],
        }
    )
    w1, w2 = rng.integers(0, len(_WORDS), (2, n_items))
    second = (item_cluster + 3) % g
    item = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1),
            "movie_title": [
                f"The {_WORDS[a].title()} {_WORDS[b].title()} {k + 1}"
                for k, (a, b) in enumerate(zip(w1, w2))
            ],
            "release_year": rng.integers(1950, 2025, n_items),
            "class": [
                f"{GENRES[c % len(GENRES)]} {GENRES[s % len(GENRES)]}"
                for c, s in zip(item_cluster, second)
            ],
        }
    )
    return inter, user, item


def _sample_items(rng, users, cum_pref, cum_w, sizes, starts, order, item_cluster) -> np.ndarray:
    """Cluster by the user's preferences (inverse CDF), then item by in-cluster popularity."""
    g = cum_pref.shape[1]
    r = rng.random(len(users))
    cl = np.minimum(_row_search(cum_pref, users, r), g - 1)
    empty = sizes[cl] == 0
    cl[empty] = item_cluster[rng.integers(0, len(item_cluster), int(empty.sum()))]
    r2 = rng.random(len(users))
    pos = np.empty(len(users), dtype=np.int64)
    for c in range(g):
        m = cl == c
        if m.any():
            s, e = starts[c], starts[c] + sizes[c]
            pos[m] = s + np.minimum(np.searchsorted(cum_w[s:e], r2[m]), e - s - 1)
    return order[pos]


def _row_search(
    cum: np.ndarray, users: np.ndarray, r: np.ndarray, chunk: int = 1_000_000
) -> np.ndarray:
    out = np.empty(len(users), dtype=np.int64)
    for s in range(0, len(users), chunk):
        e = s + chunk
        out[s:e] = (r[s:e, None] > cum[users[s:e]]).sum(1)
    return out


def write_synthetic(spec: SyntheticSpec, folder: str | Path, name: str = "synthetic") -> Path:
    """Generate and write ``NAME.inter/.user/.item`` under ``folder/NAME``; returns that folder."""
    inter, user, item = generate(spec)
    out = Path(folder) / name
    out.mkdir(parents=True, exist_ok=True)
    _write(
        inter,
        out / f"{name}.inter",
        {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"},
    )
    _write(
        user,
        out / f"{name}.user",
        {"user_id": "token", "age": "token", "gender": "token", "occupation": "token"},
    )
    _write(
        item,
        out / f"{name}.item",
        {
            "item_id": "token",
            "movie_title": "token_seq",
            "release_year": "token",
            "class": "token_seq",
        },
    )
    return out


def _write(df: pd.DataFrame, path: Path, types: dict[str, str]) -> None:
    header = {c: f"{c}:{types[c]}" for c in df.columns}
    df.rename(columns=header).to_csv(path, sep="\t", index=False, float_format="%g")
