"""The ``dp`` strategy's per-cluster history shares, fitted on VALID when asked for.

CRAGRU's ``dp`` keeps, for each item cluster, a share of the prompt history chosen by a
multiple-choice knapsack over a utility table measured on the users' validation items
(:func:`retrieval.strategies.ratio_table`, :func:`~retrieval.strategies.knapsack_ratios`). Here
the table is measured with the store's candidate model on a seeded sample of the retained
users whose history exceeds the budget ``H``, at the store's ledger version. The shares are
computed for the call and never stored: they hold nothing to forget later.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmrec.data.split import VALID
from retrieval import strategies as st
from retrieval.candidates import user_rows

#: users sampled for the VALID utility table (cost grows with users x clusters x 10 shares)
DP_USERS = 64


def fit_dp_ratios(
    store,
    H: int,
    seed: int,
    n_candidates: int | None = None,
    candidates: Callable[[np.ndarray], np.ndarray] | None = None,
    max_users: int = DP_USERS,
) -> tuple[np.ndarray, dict]:
    """``(ratios, info)``: per-cluster shares of the history budget ``H`` for ``store``;
    ``candidates(users) -> [len(users), n]`` gives the lists re-ranked by the utility (default:
    the store's). With no user above the budget every cluster gets an equal share."""
    ws, view = store.ws, store.view
    ds = ws.dataset
    k = int(store.clusters.k)
    m = ws.split.mask(VALID, view.keep)
    valid = {}
    for u, i in zip(ds.inter_user[m], ds.inter_item[m]):
        valid.setdefault(int(u), []).append(int(i))
    pool = [
        u
        for u in sorted(valid)
        if not view.forgotten_users[u] and len(store.history(u)[0]) > int(H)
    ]
    if not pool:
        return np.full(k, 1.0 / k), {"users": 0, "note": "no user above the history budget"}
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(pool, min(max_users, len(pool)), replace=False))
    got = candidates(users) if candidates is not None else store.candidates(users, n_candidates)
    hist = [store.history(int(u))[0] for u in users]
    labels = store.clusters.labels

    def score_rows(selections):
        return store.cooccurrence.scores(user_rows(ds.n_items, [np.unique(s) for s in selections]))

    util = st.hit_utility(
        score_rows,
        [row[row >= 0] for row in np.asarray(got)],
        [np.asarray(valid[int(u)]) for u in users],
    )
    table = st.ratio_table(hist, [labels[h] for h in hist], util, int(H), k, seed)
    ratios, best = st.knapsack_ratios(table)
    return ratios, {"users": int(len(users)), "table_utility": float(best)}
