"""``scripts/bench.py train``: the CF base models' default (tuned) recipes on ml-100k.

RecBole's RS 8:1:1 per-user split (split seed fixed, ``--split-seed``), test evaluated with
RecBole's full ranking protocol (train + valid items masked). One line per model and seed with
the training wall seconds (``fit`` only: data loading and evaluation excluded), then one summary
line per model with the means, the RecBole 1.2.1 anchors measured on this machine kind and the
speed-up over them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from llmrec.cli.common import parse_overrides
from llmrec.data.dataset import load_dataset
from llmrec.data.parts import part_pairs
from llmrec.data.split import TEST, TRAIN, VALID, random_split
from llmrec.errors import LlmrecError
from llmrec.evaluation import evaluate_ranking
from llmrec.models import MODEL_REGISTRY, build_model

from .common import Subcommands, emit

#: RecBole 1.2.1 on ml-100k, RS 8:1:1, seed 2020, 100 epochs, CPU of this machine kind.
RECBOLE_ANCHORS = {
    "bpr": {"ndcg@10": 0.2886, "recall@10": 0.2498, "seconds": 72.6, "epochs": 100},
    "lightgcn": {"ndcg@10": 0.2823, "recall@10": 0.2361, "seconds": 129.8, "epochs": 100},
}


def configure(p: argparse.ArgumentParser) -> None:
    """Train BPR-MF / LightGCN with their default recipes; test NDCG/Recall@10 and seconds."""
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[2020, 2021, 2022], help="training seeds"
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["bpr", "lightgcn"],
        choices=sorted(MODEL_REGISTRY),
        help="CF models trained",
    )
    p.add_argument("--dataset", default="ml-100k", help="atomic dataset name")
    p.add_argument("--data-dir", default=None, help="folder holding NAME.inter (default: search)")
    p.add_argument("--split-seed", type=int, default=2020, help="seed of the random 8:1:1 split")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--early-stop", action="store_true", help="early stopping on valid NDCG@10")
    p.add_argument("--progress", action="store_true", help="per-epoch lines on stdout")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="hyper-parameter override"
    )


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, args.data_dir)
    split = random_split(ds, (0.8, 0.1, 0.1), seed=args.split_seed)

    train, valid, test = (part_pairs(ds, split, p) for p in (TRAIN, VALID, TEST))
    seen = part_pairs(ds, split, TRAIN, VALID)
    try:
        overrides = parse_overrides(args.set)
    except LlmrecError as exc:
        raise SystemExit(str(exc)) from None

    for name in args.models:
        rows = []
        for seed in args.seeds:
            model = build_model(name, ds.n_users, ds.n_items, seed=seed, **overrides)
            t0 = time.perf_counter()
            model.fit(*train, valid=valid if args.early_stop else None, progress=args.progress)
            seconds = time.perf_counter() - t0
            res = evaluate_ranking(model.score, ds.n_items, *seen, *test, ks=(10,))
            row = {
                "bench": "train",
                "model": name,
                "dataset": args.dataset,
                "seed": seed,
                "seconds": round(seconds, 3),
                "ndcg@10": round(res["ndcg@10"], 4),
                "recall@10": round(res["recall@10"], 4),
                "hit@10": round(res["hit@10"], 4),
                "mrr@10": round(res["mrr@10"], 4),
                "epochs": len(model.history),
                "threads": args.threads,
            }
            rows.append(row)
            emit(row)
        mean = {
            k: float(np.mean([r[k] for r in rows])) for k in ("seconds", "ndcg@10", "recall@10")
        }
        summary = {
            "bench": "train",
            "model": name,
            "dataset": args.dataset,
            "summary": True,
            "seeds": list(args.seeds),
            "seconds": round(mean["seconds"], 3),
            "seconds_max": round(max(r["seconds"] for r in rows), 3),
            "ndcg@10": round(mean["ndcg@10"], 4),
            "ndcg@10_std": round(float(np.std([r["ndcg@10"] for r in rows])), 4),
            "recall@10": round(mean["recall@10"], 4),
            "epochs": float(np.mean([r["epochs"] for r in rows])),
            "config": {k: v for k, v in model.config.items() if k not in ("seed",)},
        }
        anchor = RECBOLE_ANCHORS.get(name) if args.dataset == "ml-100k" else None
        if anchor is not None:
            summary["recbole"] = anchor
            summary["speedup_vs_recbole"] = round(anchor["seconds"] / mean["seconds"], 1)
            summary["ndcg@10_vs_recbole"] = round(mean["ndcg@10"] - anchor["ndcg@10"], 4)
        emit(summary)
    return 0


SUBCOMMANDS: Subcommands = {"train": (configure, run)}
