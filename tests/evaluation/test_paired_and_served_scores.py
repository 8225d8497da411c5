"""The one paired test (llmrec.evaluation.paired) behind both reports, and the score row that
turns a served list into a score function (llmrec.evaluation.ranking.ranking_first_scores)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from llmrec.evaluation.paired import paired_difference
from llmrec.evaluation.ranking import evaluate_ranking, ranking_first_scores
from llmrec.evaluation.report import significance


def _seed(deltas: dict[str, list[float]], excess: dict[str, float]) -> dict:
    users = list(range(len(next(iter(deltas.values())))))
    return {
        "methods": {
            m: {
                "bias": {
                    "vs_gold": {
                        "per_user": {"neighbours": {"users": users, "delta_ndcg": d}},
                        "excess": {"delta_ndcg": excess[m]},
                    }
                }
            }
            for m, d in deltas.items()
        }
    }


def test_report_significance_is_the_paired_difference_of_the_pooled_users():
    rng = np.random.default_rng(4)
    seeds = [
        _seed(
            {"a": list(rng.normal(0.1, 0.2, 12)), "b": list(rng.normal(0, 0.2, 12))},
            {"a": 0.1 + s / 10, "b": 0.02 * s},
        )
        for s in range(3)
    ]
    (row,) = significance(seeds)
    da = np.concatenate([s["methods"]["a"]["bias"]["vs_gold"]["per_user"]["neighbours"]["delta_ndcg"] for s in seeds])  # fmt: skip
    db = np.concatenate([s["methods"]["b"]["bias"]["vs_gold"]["per_user"]["neighbours"]["delta_ndcg"] for s in seeds])  # fmt: skip
    assert row["n_pairs"] == 36
    assert row["wilcoxon_p"] == paired_difference(da, db)["wilcoxon_p_value"]
    assert np.isclose(row["wilcoxon_p"], stats.wilcoxon(da - db).pvalue)
    ea, eb = [0.1, 0.2, 0.3], [0.0, 0.02, 0.04]
    assert np.isclose(row["ttest_excess_p"], stats.ttest_rel(ea, eb).pvalue)


def test_paired_difference_drops_zero_differences_before_wilcoxon():
    a = np.array([0.3, 0.2, 0.5, 0.1, 0.4, 0.0, 0.6, 0.2])
    b = np.array([0.1, 0.2, 0.2, 0.1, 0.1, 0.1, 0.2, 0.0])
    d = paired_difference(a, b)
    nz = (a - b)[a != b]
    assert d["ties"] == 2 and np.isclose(d["wilcoxon_p_value"], stats.wilcoxon(nz).pvalue)
    assert paired_difference(a, a)["wilcoxon_p_value"] == 1.0


def test_served_list_first_then_base_order_then_floor():
    base = np.array([0.5, np.inf * -1, 2.0, 1.0, 3.0], dtype=np.float32)
    s = ranking_first_scores(np.array([3, 0]), base, 5)
    assert s.dtype == np.float64
    assert list(np.argsort(-s)) == [3, 0, 4, 2, 1] and s[1] == -1e12
    f = ranking_first_scores(np.array([2]), base, 5, floor=-np.inf, dtype=np.float32)
    assert f.dtype == np.float32 and f[1] == -np.inf and list(np.argsort(-f))[:3] == [2, 4, 3]


def test_scores_rank_a_served_list_as_served_in_full_ranking():
    served = {0: np.array([4, 1]), 1: np.array([2])}
    base = np.zeros((2, 6))

    def fn(users):
        return np.stack([ranking_first_scores(served[int(u)], base[int(u)], 6) for u in users])

    res = evaluate_ranking(
        fn, 6, np.zeros(0, int), np.zeros(0, int), np.array([0, 1]), np.array([1, 3]), ks=(1, 2)
    )
    assert res["hit@1"] == 0.0 and res["hit@2"] == 0.5  # user 0's test item is served second
