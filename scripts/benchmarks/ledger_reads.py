"""What a read costs after many small forget requests (issue 27, item 11).

For each ``--sizes`` N: a fresh workspace on ``--dataset`` (no artifacts) records N
single-interaction requests through the forget runner, then ``llmrec data info`` and
``llmrec audit`` run in their own processes (wall seconds, peak RSS), and the retained-view fold
every reader does (``Workspace.view``: the cost under ``retrieve``) is timed in-process. The
figures for 10^6 requests are extrapolated from the largest two sizes (reads grow linearly with
the ledger while each reader re-folds it).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Subcommands, emit
from llmrec.data.requests import interactions_request
from llmrec.forget.runner import forget
from llmrec.workspace import Workspace


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000, 10_000, 40_000],
        help="numbers of single-interaction requests (default: %(default)s)",
    )
    p.add_argument("--dataset", default="ml-100k", help="atomic dataset (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="its folder (default: RecBole's examples)")
    p.add_argument("--seed", type=int, default=2020, help="which interactions (default: 2020)")


def _child(argv: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one ``llmrec`` command in its own process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llmrec", *argv], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit": proc.returncode,
    }


def run(args: argparse.Namespace) -> int:
    rows = []
    for n in sorted(args.sizes):
        with tempfile.TemporaryDirectory(prefix="ledger-reads-") as tmp:
            ws = Workspace(Path(tmp) / "ws", dataset=args.dataset, data_dir=args.data_dir)
            ds = ws.dataset
            rng = np.random.default_rng(args.seed)
            picked = rng.choice(ds.n_inter, size=min(n, ds.n_inter // 2), replace=False)
            requests = [interactions_request(ds, np.array([i])) for i in picked]
            t0 = time.perf_counter()
            forget(ws, requests)
            record_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ws.view()
            fold_s = time.perf_counter() - t0
            common = ["--workspace", str(ws.root), "--dataset", args.dataset]
            if args.data_dir:
                common += ["--data-dir", args.data_dir]
            row = {
                "bench": "ledger-reads",
                "requests": len(requests),
                "ledger_mb": round(ws.ledger_path.stat().st_size / 2**20, 1),
                "forget_seconds": round(record_s, 2),
                "fold_seconds": round(fold_s, 3),
                "data_info": _child(["data", "info", *common]),
                "audit": _child(["audit", *common]),
                "self_peak_rss_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
            }
            rows.append(emit(row))
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        per = (b["requests"] - a["requests"]) or 1

        def at(key: str, sub: str | None = None) -> float:
            va = a[key][sub] if sub else a[key]
            vb = b[key][sub] if sub else b[key]
            return round(vb + (vb - va) / per * (10**6 - b["requests"]), 1)

        emit(
            {
                "bench": "ledger-reads",
                "extrapolated_to_requests": 10**6,
                "data_info_seconds": at("data_info", "seconds"),
                "audit_seconds": at("audit", "seconds"),
                "fold_seconds": at("fold_seconds"),
                "data_info_peak_rss_mb": at("data_info", "peak_rss_mb"),
                "audit_peak_rss_mb": at("audit", "peak_rss_mb"),
            }
        )
    return 0


SUBCOMMANDS: Subcommands = {"ledger-reads": (configure, run)}
