"""The ``unlearn`` benchmark (``python scripts/bench.py unlearn``): every acceptance figure of the
embedding unlearners from one run, one JSON line per measurement.

Per base model (BPR-MF, LightGCN; default recipe, trained on the full ml-100k RS 8:1:1 split):

* request: all interactions of 5% random users (``select_users`` + ``user_interactions_request``);
* Retrain (median of ``--retrain-repeats`` runs), AltEraser (median of ``--repeats`` runs), FineTune and reverse BPR on it, side by
  side: seconds, speed-up over Retrain, NDCG@10 on retained users, membership-inference AUC on the
  forgotten pairs, their median rank; AltEraser's and FineTune's time to reach Retrain-consistency
  (NDCG@10 within 0.01 and MIA AUC within 0.05 of Retrain), traced per sweep / epoch;
* LEGO on {gender, age, occupation}: per attribute and attacker (MLP, gradient boosting) the
  balanced accuracy, macro-F1 and AUC before and after with the chance level (one line each,
  means over ``--audit-repeats`` balanced down-samplings), NDCG@10 before and after and the
  relative drop, the cold time (all calibrations, in parallel processes), the calibrations'
  compute-only seconds, and the time to withdraw one attribute request and to add it back
  (cached calibrations, only the combination re-solved) with both ratios. ``--lego-only`` skips
  the other unlearners.

The last line per model is a summary with the acceptance checks.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from llmrec.data.dataset import load_dataset
from llmrec.data.parts import part_pairs
from llmrec.data.requests import ForgetRequest, select_users, user_interactions_request
from llmrec.data.split import TRAIN, random_split
from llmrec.evaluation import evaluate_model
from llmrec.models import build_model
from llmrec.privacy.attributes import attribute_inference
from llmrec.privacy.membership import membership_inference, pair_ranks, rank_summary
from llmrec.unlearning import LEGO, AltEraser, FineTune, Retrain, ReverseBPR, make_task

from .common import emit

ATTRIBUTES = ("gender", "age", "occupation")


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench.py unlearn``."""
    p.add_argument("--models", nargs="+", default=["bpr", "lightgcn"], help="CF base models")
    p.add_argument("--dataset", default="ml-100k", help="atomic dataset name")
    p.add_argument(
        "--data-dir", default=None, help="folder holding NAME.inter (default: recbole's examples)"
    )
    p.add_argument("--seed", type=int, default=2020, help="random seed")
    p.add_argument("--fraction", type=float, default=0.05, help="share of users forgotten")
    p.add_argument("--repeats", type=int, default=5, help="AltEraser runs (median is reported)")
    p.add_argument("--retrain-repeats", type=int, default=2, help="Retrain runs (median)")
    p.add_argument(
        "--finetune-epochs", type=int, default=10, help="FineTune epochs on the retained data"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--skip-lego", action="store_true", help="skip the LEGO attribute benchmark")
    p.add_argument(
        "--lego-only", action="store_true", help="train the base models and run only LEGO"
    )
    p.add_argument(
        "--attackers", nargs="+", default=["mlp", "gbdt"], help="attribute-inference attackers"
    )
    p.add_argument(
        "--audit-repeats",
        type=int,
        default=3,
        help="independent balanced down-samplings per attacker audit (figures are their mean)",
    )


class _Scorer:
    """Utility and completeness of a model on one task (retained NDCG, MIA, forgotten rank)."""

    def __init__(self, task, seed: int) -> None:
        self.task = task
        self.data = task.retained_data()
        self.keys = np.unique(task.dataset.pair_keys)
        self.seed = seed

    def __call__(self, model) -> dict:
        ds, task = self.task.dataset, self.task
        ndcg = evaluate_model(model, self.data, "test", ks=(10,))["ndcg@10"]
        mia = membership_inference(
            model.score, ds.n_items, *task.forget, *task.train, self.keys, seed=self.seed
        )
        ranks = pair_ranks(model.score, ds.n_items, *task.forget, *task.train)
        return {
            "ndcg@10": ndcg,
            "mia_auc": mia.auc,
            "mia_auc_threshold": mia.auc_threshold,
            "forgotten_median_rank": rank_summary(ranks, ds.n_items)["median_rank"],
        }


def _against_gold(
    base: dict, method: str, seconds: float, gold_seconds: float, m: dict, gold: dict, **extra
) -> dict:
    """One method's line: its seconds and speed-up over Retrain, ``extra``, its NDCG@10 and MIA
    AUC gaps to Retrain's, and its own figures."""
    return {
        **base,
        "method": method,
        "seconds": seconds,
        "speedup": gold_seconds / seconds,
        **extra,
        "ndcg_gap": m["ndcg@10"] - gold["ndcg@10"],
        "mia_gap": m["mia_auc"] - gold["mia_auc"],
        **m,
    }


def _consistent(m: dict, gold: dict) -> bool:
    return (
        abs(m["ndcg@10"] - gold["ndcg@10"]) <= 0.01 and abs(m["mia_auc"] - gold["mia_auc"]) <= 0.05
    )


def _trace(unlearner, model, task, score, gold) -> tuple[object, object, list[dict]]:
    """Run with a per-iteration callback scoring the intermediate model (off the clock)."""
    trace: list[dict] = []

    def cb(m, entry):
        s = score(m)
        trace.append(
            {
                "iteration": entry["iteration"],
                "seconds": entry["seconds"],
                **s,
                "consistent": _consistent(s, gold),
            }
        )

    new, rec = unlearner.unlearn(model, task, callback=cb)
    return new, rec, trace


def _first_consistent(trace: list[dict]) -> float | None:
    for t in trace:
        if t["consistent"]:
            return t["seconds"]
    return None


def run(args: argparse.Namespace) -> int:
    """Embedding unlearners: AltEraser / FineTune / reverse BPR vs Retrain, LEGO attributes."""
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, args.data_dir)
    split = random_split(ds, (0.8, 0.1, 0.1), seed=2020)
    users = select_users(ds, args.fraction, "random", args.seed)
    request = user_interactions_request(ds, users)
    for name in args.models:
        model = build_model(name, ds.n_users, ds.n_items, seed=args.seed)
        t0 = time.perf_counter()
        model.fit(*part_pairs(ds, split, TRAIN))
        model.ledger_version = 0
        emit(
            {
                "bench": "unlearn",
                "model": name,
                "stage": "train",
                "seconds": time.perf_counter() - t0,
            }
        )
        if args.lego_only:
            checks = _lego(args, name, model, ds, split)
            emit({"bench": "unlearn", "model": name, "summary": True, "checks": checks})
            continue
        task = make_task((ds, split), [request], model, version=1)
        score = _Scorer(task, args.seed)
        base = {
            "bench": "unlearn",
            "model": name,
            "request": f"{args.fraction:.0%} random users",
            "forgotten_pairs": int(len(task.forget[0])),
            "forgotten_users": int(len(users)),
        }
        original = score(model)
        emit({**base, "method": "original", **original})

        gold_runs = [Retrain().unlearn(model, task) for _ in range(max(1, args.retrain_repeats))]
        gold_model, gold_rec = gold_runs[0]
        gold_seconds = statistics.median(r.seconds for _, r in gold_runs)
        gold_cpu = statistics.median(r.cpu_seconds for _, r in gold_runs)
        gold = score(gold_model)
        emit(
            {
                **base,
                "method": "retrain",
                "seconds": gold_seconds,
                "seconds_runs": [r.seconds for _, r in gold_runs],
                "cpu_seconds": gold_cpu,
                "peak_memory_mb": gold_rec.peak_memory_mb,
                "epochs": gold_rec.iterations,
                **gold,
            }
        )

        runs = []
        for _ in range(args.repeats):
            alt_model, rec = AltEraser(seed=args.seed).unlearn(model, task)
            runs.append(rec)
        alt_seconds = statistics.median(r.seconds for r in runs)
        alt_cpu = statistics.median(r.cpu_seconds for r in runs)
        alt = score(alt_model)
        _, _, alt_trace = _trace(AltEraser(seed=args.seed), model, task, score, gold)
        emit(
            _against_gold(
                base, "alteraser", alt_seconds, gold_seconds, alt, gold,
                seconds_runs=[r.seconds for r in runs],
                cpu_seconds=alt_cpu,
                speedup_cpu=gold_cpu / alt_cpu,
                peak_memory_mb=runs[0].peak_memory_mb,
                sweeps=runs[0].iterations,
                seconds_to_consistency=_first_consistent(alt_trace),
                trace=alt_trace,
            )
        )  # fmt: skip

        ft_model, ft_rec, ft_trace = _trace(
            FineTune(epochs=args.finetune_epochs, seed=args.seed), model, task, score, gold
        )
        ft = score(ft_model)
        emit(
            _against_gold(
                base, "finetune", ft_rec.seconds, gold_seconds, ft, gold,
                epochs=ft_rec.iterations,
                seconds_to_consistency=_first_consistent(ft_trace),
                trace=ft_trace,
            )
        )  # fmt: skip

        rb_model, rb_rec = ReverseBPR(seed=args.seed).unlearn(model, task)
        rb = score(rb_model)
        emit(
            _against_gold(
                base, "reverse-bpr", rb_rec.seconds, gold_seconds, rb, gold,
                epochs=rb_rec.iterations,
                steps=rb_rec.info.get("steps"),
                forget_win_rate=rb_rec.info.get("forget_win_rate"),
            )
        )  # fmt: skip

        alt_cons = _first_consistent(alt_trace)
        ft_cons = _first_consistent(ft_trace)
        summary = {
            "bench": "unlearn",
            "model": name,
            "summary": True,
            "alteraser_speedup": gold_seconds / alt_seconds,
            "alteraser_speedup_cpu": gold_cpu / alt_cpu,
            "alteraser_ndcg_gap": alt["ndcg@10"] - gold["ndcg@10"],
            "alteraser_mia_gap": alt["mia_auc"] - gold["mia_auc"],
            "alteraser_seconds_to_consistency": alt_cons,
            "finetune_seconds_to_consistency": ft_cons,
            "reverse_bpr_median_rank": rb["forgotten_median_rank"],
            "retrain_median_rank": gold["forgotten_median_rank"],
            "reverse_bpr_ndcg_gap": rb["ndcg@10"] - gold["ndcg@10"],
            "checks": {
                "alteraser_10x_faster": gold_seconds / alt_seconds >= 10,
                "alteraser_ndcg_within_0.01": abs(alt["ndcg@10"] - gold["ndcg@10"]) <= 0.01,
                "alteraser_mia_within_0.05": abs(alt["mia_auc"] - gold["mia_auc"]) <= 0.05,
                "alteraser_consistent_before_finetune": alt_cons is not None
                and (ft_cons is None or alt_cons < ft_cons),
                "reverse_bpr_rank_not_higher": rb["forgotten_median_rank"]
                >= gold["forgotten_median_rank"],
                "reverse_bpr_ndcg_within_0.02": abs(rb["ndcg@10"] - gold["ndcg@10"]) <= 0.02,
            },
        }
        if not args.skip_lego:
            summary["checks"].update(_lego(args, name, model, ds, split))
        emit(summary)
    return 0


def _attack_rows(res: dict) -> dict:
    out = {}
    for a, entry in res.items():
        for att, r in entry.items():
            if att == "classes":
                continue
            out[f"{a}/{att}"] = {
                k: r[k] for k in ("balanced_accuracy", "macro_f1", "auc", "chance", "n_classes")
            }
    return out


def _lego(args, name, model, ds, split) -> dict:
    """LEGO figures for one model; returns its acceptance checks."""
    full = ForgetRequest("attribute", attributes=ATTRIBUTES)
    task = make_task((ds, split), [full], model, version=1)
    data = task.retained_data()
    ndcg0 = evaluate_model(model, data, "test", ks=(10,))["ndcg@10"]

    def audit(emb):
        return attribute_inference(
            emb, ds, ATTRIBUTES, args.attackers, repeats=args.audit_repeats, seed=args.seed
        )

    before = audit(model.user_embeddings())
    lego = LEGO(seed=args.seed)
    new, rec = lego.unlearn(model, task)
    ndcg1 = evaluate_model(new, data, "test", ks=(10,))["ndcg@10"]
    after = audit(new.user_embeddings())
    kept = tuple(a for a in ATTRIBUTES if a != "occupation")
    _, rec_w = lego.unlearn(
        model,
        make_task((ds, split), [ForgetRequest("attribute", attributes=kept)], model, version=1),
    )
    _, rec_a = lego.unlearn(model, task)
    rb, ra = _attack_rows(before), _attack_rows(after)
    # compute-only cost: the calibrations' own seconds summed, as if run one after another
    compute = rec.info["calibration_compute_seconds"]
    for key in rb:
        attribute, attacker = key.split("/")
        emit(
            {
                "bench": "unlearn",
                "model": name,
                "method": "lego",
                "attribute": attribute,
                "attacker": attacker,
                "chance": rb[key]["chance"],
                "n_classes": rb[key]["n_classes"],
                **{f"{k}_before": rb[key][k] for k in ("balanced_accuracy", "macro_f1", "auc")},
                **{f"{k}_after": ra[key][k] for k in ("balanced_accuracy", "macro_f1", "auc")},
            }
        )
    emit(
        {
            "bench": "unlearn",
            "model": name,
            "method": "lego",
            "attributes": list(ATTRIBUTES),
            "audit_repeats": args.audit_repeats,
            "attack_before": rb,
            "attack_after": ra,
            "ndcg@10_before": ndcg0,
            "ndcg@10_after": ndcg1,
            "ndcg_relative_drop": 1 - ndcg1 / ndcg0,
            "seconds_all_calibrations": rec.seconds,
            "calibration_seconds": rec.info["calibration_seconds"],
            "calibration_mode": rec.info["calibration_mode"],
            "calibration_compute_seconds": compute,
            "combine_seconds": rec.info["combine_seconds"],
            "seconds_withdraw_occupation": rec_w.seconds,
            "seconds_add_occupation": rec_a.seconds,
            "withdraw_speedup": rec.seconds / rec_w.seconds,
            "add_speedup": rec.seconds / rec_a.seconds,
            "withdraw_speedup_vs_compute": compute / rec_w.seconds,
            "add_speedup_vs_compute": compute / rec_a.seconds,
            "cached_on_withdraw": rec_w.info["cached"],
            "cached_on_add": rec_a.info["cached"],
            "weights": rec.info["weights"],
            "club_after": rec.info["club_after"],
            "mean_relative_change": rec.info["mean_relative_change"],
        }
    )
    attributes_before = {}
    for key, r in rb.items():
        a = key.split("/")[0]
        attributes_before[a] = max(
            attributes_before.get(a, 0.0), r["balanced_accuracy"] - r["chance"]
        )
    return {
        # leakage exists when the strongest attacker finds it
        "lego_attacker_above_chance_before": all(v > 0.05 for v in attributes_before.values()),
        # after: every attacker on every attribute
        "lego_at_chance_after": all(
            r["balanced_accuracy"] <= r["chance"] + 0.05 for r in ra.values()
        ),
        "lego_ndcg_drop_le_5pct": 1 - ndcg1 / ndcg0 <= 0.05,
        "lego_withdraw_add_5x": min(rec.seconds / rec_w.seconds, rec.seconds / rec_a.seconds) >= 5,
    }


#: bench.py subcommands of this module
SUBCOMMANDS = {"unlearn": (configure, run)}
