"""The served blend (``adapters/blend.json``): what served scoring learns from user data.

The served likelihood score is ``log p_LM(item) + w * prior(rank in candidates)``; ``w`` is
chosen on VALID (:func:`~llmrec.serving.cragru.choose_blend`), and the users with at most
``cold_max`` retained train interactions keep their own weight only when it beats the common one
on their VALID part (:func:`~llmrec.serving.cragru.group_weight`). Chosen from user data, the
file is a forget artifact: :func:`fit_blend` is the one fit, a pure function of the workspace's
retained data at a ledger version and of the settings recorded in the file
(:class:`~llmrec.serving.blend_file.BlendFit`), so the ``blend`` forget stage re-fits it from
scratch and the result is byte-identical to a fresh fit on the retained data. The file
(:mod:`llmrec.serving.blend_file`) records its ledger version and dataset; it is registered in
the ledger with its content hash, which is how the audit finds an edited, stale or foreign file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
from llmrec.serving.blend_file import (
    BLEND_FILE,
    BLEND_GRID,
    FORMAT,
    KIND,
    MIN_COLD_USERS,
    NAME,
    BlendFit,
    blend_path,
    encode,
    read_blend,
    write_blend,
)
from llmrec.workspace import Workspace

__all__ = [
    "BLEND_FILE",
    "BLEND_GRID",
    "FORMAT",
    "KIND",
    "NAME",
    "BlendFit",
    "blend_path",
    "encode",
    "fit_blend",
    "fit_users",
    "read_blend",
    "write_blend",
]


def fit_users(ws: Workspace, view: RetainedView) -> np.ndarray:
    """The users the blend is fitted on: every served user with a retained VALID pair."""
    from llmrec.models.training import retained_data

    users = np.unique(retained_data(ws, view).valid[0])
    return users[~view.forgotten_users[users]]


def fit_blend(
    ws: Workspace, fit: BlendFit, store: Any = None, ledger: Ledger | None = None
) -> dict[str, Any]:
    """The blend record fitted from scratch on the retained data at ``store``'s ledger version
    (default: the workspace's store, which must be current; ``ledger``: an open ledger of
    ``ws``): the workspace's pipeline ranks
    :func:`fit_users` in likelihood mode (pure LM), each weight of ``fit.grid`` blends them,
    VALID NDCG@10 picks the weight (short-history users separately, see the module docstring).
    Deterministic: same data, settings and artifacts give the same record."""
    from llmrec.evaluation import evaluate_model
    from llmrec.evaluation.ranking import ranking_first_scores
    from llmrec.models.training import retained_data
    from llmrec.serving.cragru import (
        CragruOptions,
        CragruPipeline,
        blend_ranking,
        choose_blend,
        group_weight,
    )

    pipe = CragruPipeline(
        ws,
        CragruOptions(
            strategy=fit.strategy,
            history=fit.history,
            n_candidates=fit.n_candidates,
            template=fit.template,
            device=fit.device,
            blend=0.0,  # the pure LM ranking (and the file being re-fitted is not read)
        ),
        store=store,
        ledger=ledger,
    )
    prior = float(pipe.adapter_config.lora.prior_weight) if pipe.adapter_config else 0.0
    view = pipe.view
    data = retained_data(ws, view)
    users = fit_users(ws, view)
    ctxs = [pipe.context(int(u)) for u in users]
    ranked = pipe.recommend(users, "likelihood", contexts=ctxs, blend=0.0)
    cands = {int(c.user): c.candidates[~view.forgotten_items[c.candidates]] for c in ctxs}
    base = pipe.store.candidate_scores(users)
    row = {int(u): k for k, u in enumerate(users)}
    n_items = ws.dataset.n_items
    n_train = np.array([pipe.n_history(int(u)) for u in users])
    cold = users[n_train <= fit.cold_max]
    warm = users[n_train > fit.cold_max]
    if len(cold) < MIN_COLD_USERS or not len(warm):
        cold, warm = cold[:0], users
    is_cold = set(cold.tolist())

    def blended(w: float, w_cold: float | None = None) -> dict[int, np.ndarray]:
        return {
            r.user: blend_ranking(
                r, cands[r.user], w if w_cold is None or r.user not in is_cold else w_cold
            ).items
            for r in ranked
        }

    def valid(rankings: dict[int, np.ndarray], who: np.ndarray, per_user: bool = False):
        def fn(batch: np.ndarray) -> np.ndarray:
            return np.stack(
                [ranking_first_scores(rankings[int(u)], base[row[int(u)]], n_items) for u in batch]
            )

        return evaluate_model(
            None, data, "valid", who, ks=(10,), score_fn=fn, return_per_user=per_user
        )

    grid = tuple(sorted({*(float(w) for w in fit.grid), prior}))
    best, curve = choose_blend(lambda w: valid(blended(w), warm)["ndcg@10"], grid)
    record: dict[str, Any] = {
        "format": FORMAT,
        "dataset": ws.dataset.fingerprint,
        "ledger_version": int(view.version),
        "fit": fit.to_dict(),
        "users": int(len(users)),
        "tuned_on": "valid ndcg@10",
        "blend": best,
        "trained_prior_weight": prior,
        "valid_ndcg@10": {str(w): v for w, v in curve.items()},
    }
    best_cold = None
    if len(cold):
        per = {
            w: np.asarray(valid(blended(w), cold, per_user=True)["per_user"]["ndcg@10"])
            for w in grid
        }
        tuned_cold, cold_curve = choose_blend(lambda w: float(per[w].mean()), grid)
        best_cold, gain = group_weight(tuned_cold, best, per[tuned_cold], per[best])
        record["cold_users"] = {
            "max_train": fit.cold_max,
            "users": int(len(cold)),
            "blend": best_cold,
            "tuned_blend": tuned_cold,
            "valid_gain_over_common": gain,
            "valid_ndcg@10": {str(w): v for w, v in cold_curve.items()},
        }
    record["served_valid_ndcg@10"] = valid(blended(best, best_cold), users)["ndcg@10"]
    record["candidates_valid_ndcg@10"] = valid(cands, users)["ndcg@10"]
    return record
