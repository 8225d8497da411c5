"""The ``unlearn-extra`` benchmark (``python scripts/bench.py unlearn-extra``): UnlearnRec, SISA
and RecEraser beside Retrain on ml-100k, from one run, one JSON line per measurement.

Per base model (default BPR-MF; ``--models bpr lightgcn`` for both), default recipe trained on
the RS 8:1:1 split, request = all interactions of 5% random users:

* ``retrain``: seconds (median of ``--retrain-repeats``), NDCG@10 on retained users, MIA AUC;
* ``unlearnrec``: pre-training seconds (reported apart), per-request seconds (median of
  ``--repeats``; wall and CPU), speed-up over Retrain, NDCG@10 and MIA AUC and their gaps to
  Retrain's, the objective reached by the encoder alone and after the fine-tuning steps;
* ``sisa`` / ``receraser``: initial (sharded) training seconds, per-request seconds, shards
  retrained, NDCG@10 and MIA AUC beside Retrain; plus a one-user request (one shard retrained)
  to show the cost of a request that touches a single shard.

The last line per model is a summary with the acceptance checks of UnlearnRec (speed-up >= 10,
NDCG@10 within 0.03 and MIA AUC within 0.05 of Retrain's).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from llmrec.data.dataset import load_dataset
from llmrec.data.parts import part_pairs
from llmrec.data.requests import select_users, user_interactions_request
from llmrec.data.split import TRAIN, random_split
from llmrec.evaluation import evaluate_model
from llmrec.models import build_model
from llmrec.privacy.membership import membership_inference
from llmrec.unlearning import SISA, RecEraser
from llmrec.unlearning.base import make_task
from llmrec.unlearning.retrain import Retrain
from llmrec.unlearning.unlearnrec import UnlearnRec, pretrain_encoder

from .common import emit


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench.py unlearn-extra``."""
    p.add_argument(
        "--models", nargs="+", default=["bpr"], choices=["bpr", "lightgcn"], help="CF base models"
    )
    p.add_argument("--dataset", default="ml-100k", help="atomic dataset name")
    p.add_argument(
        "--data-dir", default=None, help="folder holding NAME.inter (default: recbole's examples)"
    )
    p.add_argument("--seed", type=int, default=2020, help="random seed")
    p.add_argument("--fraction", type=float, default=0.05, help="share of users forgotten")
    p.add_argument("--repeats", type=int, default=3, help="UnlearnRec runs (median reported)")
    p.add_argument("--retrain-repeats", type=int, default=1, help="Retrain runs (median)")
    p.add_argument(
        "--pretrain-requests", type=int, default=32, help="UnlearnRec pre-training requests"
    )
    p.add_argument("--pretrain-epochs", type=int, default=5, help="UnlearnRec pre-training epochs")
    p.add_argument("--shards", type=int, default=10, help="SISA / RecEraser shards")
    p.add_argument(
        "--receraser-unit",
        default="user",
        choices=["user", "item", "interaction"],
        help="what RecEraser partitions into shards",
    )
    p.add_argument("--processes", type=int, default=None, help="shard workers (default: CPUs)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    p.add_argument("--skip-shards", action="store_true", help="UnlearnRec and Retrain only")


class _Scorer:
    """NDCG@10 on retained users and MIA AUC on the forgotten pairs of one task."""

    def __init__(self, task, seed: int) -> None:
        self.task, self.seed = task, seed
        self.data = task.retained_data()
        self.keys = np.unique(task.dataset.pair_keys)

    def __call__(self, model) -> dict:
        ds, task = self.task.dataset, self.task
        ndcg = evaluate_model(model, self.data, "test", ks=(10,))["ndcg@10"]
        mia = membership_inference(
            model.score, ds.n_items, *task.forget, *task.train, self.keys, seed=self.seed
        )
        return {"ndcg@10": float(ndcg), "mia_auc": float(mia.auc)}


def _gaps(m: dict, gold: dict) -> dict:
    return {
        "ndcg_gap": m["ndcg@10"] - gold["ndcg@10"],
        "mia_gap": m["mia_auc"] - gold["mia_auc"],
    }


def run(args: argparse.Namespace) -> int:
    """UnlearnRec, SISA and RecEraser beside Retrain on a 5%-random-users request."""
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    ds = load_dataset(args.dataset, args.data_dir)
    split = random_split(ds, (0.8, 0.1, 0.1), seed=2020)
    train_mask = split.part == TRAIN
    train = part_pairs(ds, split, TRAIN)
    users = select_users(ds, args.fraction, "random", args.seed, mask=train_mask)
    request = user_interactions_request(ds, users)
    # a request that touches one user shard: the whole history of one user
    one = np.array([int(users[0])])
    one_request = user_interactions_request(ds, one)
    for name in args.models:
        model = build_model(name, ds.n_users, ds.n_items, seed=args.seed)
        t0 = time.perf_counter()
        model.fit(*train)
        model.ledger_version = 0
        base = {"bench": "unlearn-extra", "model": name, "dataset": args.dataset}
        emit({**base, "stage": "train", "seconds": time.perf_counter() - t0})
        task = make_task((ds, split), [request], model, version=1)
        score = _Scorer(task, args.seed)
        base["request"] = f"{args.fraction:.0%} random users' interactions"
        base["forgotten_pairs"] = int(len(task.forget[0]))
        emit({**base, "method": "original", **score(model)})

        runs = [Retrain().unlearn(model, task) for _ in range(max(1, args.retrain_repeats))]
        gold_model = runs[0][0]
        gold_seconds = statistics.median(r.seconds for _, r in runs)
        gold_cpu = statistics.median(r.cpu_seconds for _, r in runs)
        gold = score(gold_model)
        emit(
            {**base, "method": "retrain", "seconds": gold_seconds, "cpu_seconds": gold_cpu, **gold}
        )

        # ---------------------------------------------------------------- UnlearnRec
        t0 = time.perf_counter()
        art = pretrain_encoder(
            model,
            task.train_before,
            ledger_version=0,
            requests=args.pretrain_requests,
            epochs=args.pretrain_epochs,
            seed=args.seed,
        )
        pretrain_seconds = time.perf_counter() - t0
        recs = []
        for _ in range(max(1, args.repeats)):
            ur_model, rec = UnlearnRec(encoder=art, seed=args.seed).unlearn(model, task)
            recs.append(rec)
        ur_seconds = statistics.median(r.seconds for r in recs)
        ur_cpu = statistics.median(r.cpu_seconds for r in recs)
        ur = score(ur_model)
        last = art.history[-1]
        ur_row = {
            **base,
            "method": "unlearnrec",
            "pretrain_seconds": pretrain_seconds,
            "pretrain_history_last": last,
            "seconds": ur_seconds,
            "seconds_runs": [r.seconds for r in recs],
            "cpu_seconds": ur_cpu,
            "speedup": gold_seconds / ur_seconds,
            "speedup_cpu": gold_cpu / ur_cpu,
            "peak_memory_mb": recs[0].peak_memory_mb,
            **{k: recs[0].info[k] for k in ("objective_encoder", "objective_final")},
            **{k: recs[0].info[k] for k in ("updated_users", "updated_items", "reset_users")},
            **ur,
            **_gaps(ur, gold),
        }
        emit(ur_row)

        # ---------------------------------------------------------------- SISA / RecEraser
        shard_rows = {}
        if not args.skip_shards:
            for un in (
                SISA(n_shards=args.shards, processes=args.processes, seed=args.seed),
                RecEraser(
                    n_shards=args.shards,
                    unit=args.receraser_unit,
                    processes=args.processes,
                    seed=args.seed,
                ),
            ):
                t0 = time.perf_counter()
                sharded = un.build(model, task.train_before)
                sharded.ledger_version = 0
                initial = time.perf_counter() - t0
                new, rec = un.unlearn(sharded, task)
                m = score(new)
                single_task = make_task((ds, split), [one_request], model, version=1)
                _, one_rec = un.unlearn(sharded, single_task)
                row = {
                    **base,
                    "method": un.name,
                    "unit": sharded.unit,
                    "aggregation": sharded.aggregation,
                    "n_shards": sharded.n_shards,
                    "initial_seconds": initial,
                    "initial_processes": sharded.history[0].get("processes"),
                    "seconds": rec.seconds,
                    "speedup": gold_seconds / rec.seconds,
                    "shards_retrained": rec.info["n_retrained"],
                    "aggregator_seconds": rec.info["aggregator_seconds"],
                    "processes": rec.info["processes"],
                    "one_user_seconds": one_rec.seconds,
                    "one_user_shards_retrained": one_rec.info["n_retrained"],
                    "retrain_ndcg@10": gold["ndcg@10"],
                    "retrain_seconds": gold_seconds,
                    **m,
                    **_gaps(m, gold),
                }
                shard_rows[un.name] = row
                emit(row)

        emit(
            {
                **base,
                "summary": True,
                "retrain_seconds": gold_seconds,
                "retrain_ndcg@10": gold["ndcg@10"],
                "retrain_mia_auc": gold["mia_auc"],
                "unlearnrec_pretrain_seconds": pretrain_seconds,
                "unlearnrec_seconds": ur_seconds,
                "unlearnrec_speedup": ur_row["speedup"],
                "unlearnrec_speedup_cpu": ur_row["speedup_cpu"],
                "unlearnrec_ndcg_gap": ur_row["ndcg_gap"],
                "unlearnrec_mia_gap": ur_row["mia_gap"],
                "pass_speedup_10x": ur_row["speedup"] >= 10,
                "pass_ndcg_0.03": abs(ur_row["ndcg_gap"]) <= 0.03,
                "pass_mia_0.05": abs(ur_row["mia_gap"]) <= 0.05,
                **{
                    f"{k}_{f}": v[f]
                    for k, v in shard_rows.items()
                    for f in ("seconds", "shards_retrained", "ndcg@10", "one_user_seconds")
                },
                "total_seconds": time.perf_counter() - t_all,
            }
        )
    return 0


SUBCOMMANDS = {"unlearn-extra": (configure, run)}
