"""Train RecBole 1.2.1's BPR on a split given as atomic files; print one JSON line.

Runs *inside a separate virtual environment* holding RecBole 1.2.1 and the old stack it needs
(numpy<2, pandas<2.3, scipy<1.12, setuptools<70; ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), never in
llmrec's own. ``scripts/bench.py retrain-gold`` writes the split and calls it::

    python scripts/recbole_side.py DATA_DIR NAME --epochs 100 --seed 2020

``DATA_DIR/NAME/NAME.{train,valid,test}.inter`` hold ``user_id:token  item_id:token`` rows;
RecBole uses them as its split (``benchmark_filename``), trains with its defaults otherwise
(early stopping on valid NDCG@10, best model restored) and evaluates test with full ranking.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    """The script's arguments (help text with defaults; no llmrec import: it runs in
    RecBole's own venv)."""
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data_dir", help="folder holding NAME/NAME.{train,valid,test}.inter")
    p.add_argument("name", help="dataset name")
    p.add_argument("--model", default="BPR", help="RecBole model name")
    p.add_argument("--epochs", type=int, default=100, help="training epochs")
    p.add_argument("--seed", type=int, default=2020, help="RecBole seed")
    return p


def main() -> int:
    args = build_parser().parse_args()

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(
        model=args.model,
        dataset=args.name,
        config_dict={
            "data_path": args.data_dir,
            "benchmark_filename": ["train", "valid", "test"],
            "load_col": {"inter": ["user_id", "item_id"]},
            "epochs": args.epochs,
            "seed": args.seed,
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "device": "cpu",
            "use_gpu": False,
            "show_progress": False,
            "checkpoint_dir": f"{args.data_dir}/saved",
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    logging.disable(logging.CRITICAL)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    t0 = time.perf_counter()
    trainer.fit(train, valid, saved=True, show_progress=False)
    seconds = time.perf_counter() - t0
    res = trainer.evaluate(test, load_best_model=True, show_progress=False)
    print(
        json.dumps(
            {
                "recbole_model": args.model,
                "ndcg@10": float(res["ndcg@10"]),
                "recall@10": float(res["recall@10"]),
                "seconds": seconds,
                "epochs": args.epochs,
                "n_users": int(dataset.user_num - 1),
                "n_items": int(dataset.item_num - 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
