"""``scripts/bench.py unlearn-cli``: ``llmrec unlearn --method M`` wall time per method, from one
run, on one trained workspace.

A workspace is trained once (``llmrec train --model bpr``); each method then runs on its own copy
of it with the same request (the train interactions of a share of the users, as ``llmrec
compare --scenario random:N%users``), as a user would type it: ``llmrec unlearn --method M
--request FILE``. Reported per method: the command's wall seconds (process start, loading,
the forget stages, evaluation and the run folder included) and the method's own seconds in the
checkpoint stage, the checkpoint's method and exactness; then the wall-time ratio to retrain.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmrec.data.requests import select_users, user_interactions_request
from llmrec.data.split import TRAIN
from llmrec.workspace import Workspace

from .common import Subcommands, emit


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="ml-100k", help="atomic dataset name")
    p.add_argument(
        "--data-dir", default=None, help="folder holding NAME.inter (default: recbole's examples)"
    )
    p.add_argument("--fraction", type=float, default=0.05, help="share of users forgotten")
    p.add_argument(
        "--methods", default="alteraser,retrain", help="comma-separated methods, each on a copy"
    )
    p.add_argument("--model", default="bpr", help="CF model trained and unlearned")
    p.add_argument("--seed", type=int, default=2020, help="random seed")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")


def _llmrec(*argv: str) -> tuple[float, dict]:
    """``llmrec argv --json --quiet`` in a fresh process: wall seconds and its JSON result."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "llmrec", *argv, "--json", "--quiet"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"llmrec {' '.join(argv)} failed: {res.stderr.strip()[-500:]}")
    return wall, json.loads(res.stdout)


def run(args: argparse.Namespace) -> int:
    """``llmrec unlearn --method M`` wall seconds per method on one trained workspace."""
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-unlearn-cli-"))
    base = root / "trained"
    shutil.rmtree(base, ignore_errors=True)
    ws = Workspace(base, dataset=args.dataset, data_dir=args.data_dir)
    ds = ws.dataset
    users = select_users(ds, args.fraction, "random", args.seed, mask=ws.split.mask(TRAIN))
    request = root / "request.jsonl"
    request.write_text(user_interactions_request(ds, users).to_json() + "\n")
    train_s, _ = _llmrec("train", "--model", args.model, "--workspace", str(base))
    out: dict = {
        "bench": "unlearn-cli",
        "dataset": args.dataset,
        "model": args.model,
        "forgotten_users": int(len(users)),
        "train_wall_s": round(train_s, 2),
        "methods": {},
    }
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        copy = root / method
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(base, copy)
        wall, res = _llmrec(
            "unlearn", "--method", method, "--model", args.model, "--request", str(request),
            "--workspace", str(copy),
        )  # fmt: skip
        record = res.get("record") or {}
        out["methods"][method] = {
            "wall_s": round(wall, 2),
            "method_s": round(float(record.get("seconds", float("nan"))), 2),
            "checkpoint": res["checkpoint"],
            **res.get("checkpoint_method", {}),
        }
    if "retrain" in out["methods"]:
        ref = out["methods"]["retrain"]["wall_s"]
        for row in out["methods"].values():
            row["wall_speedup_vs_retrain"] = round(ref / row["wall_s"], 2)
    emit(out)
    return 0


SUBCOMMANDS: Subcommands = {"unlearn-cli": (configure, run)}
