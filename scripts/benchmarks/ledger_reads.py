"""What a read costs after many small forget requests (issue 27, item 11), measured up to 10^6.

For each ``--sizes`` N: a fresh workspace on ``--dataset`` with a retrieval store (CF encoder,
so ``retrieve`` has something to read) gets N small requests in one request file, applied by
``llmrec forget`` in its own process; then ``llmrec data info``, ``llmrec retrieve`` and
``llmrec audit`` each run in their own process. Every command's wall and CPU seconds and peak
RSS (its own process) are printed, one JSON line per size, then a table of all sizes.

The requests: request k forgets the 2 interactions ``{a_k, b_k}``, a pair drawn (seeded by
``--seed``) from a pool of half the dataset's interactions, all pairs distinct. So 10^6
distinct requests fit on ml-100k, and half of the training data stays whatever N is (an
interaction named again stays dropped at its first version).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llmrec.cli.common import positive_int
from llmrec.workspace import Workspace

from .common import Subcommands, emit


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        type=positive_int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="numbers of small forget requests (default: %(default)s)",
    )
    p.add_argument("--dataset", default="ml-100k", help="atomic dataset (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="its folder (default: RecBole's examples)")
    p.add_argument("--seed", type=int, default=2020, help="which interactions (default: 2020)")


def request_lines(ws: Workspace, n: int, seed: int) -> list[str]:
    """``n`` distinct requests (JSON lines), each forgetting two interactions of the pool."""
    ds = ws.dataset
    rng = np.random.default_rng(seed)
    pool = rng.choice(ds.n_inter, size=ds.n_inter // 2, replace=False)
    p = len(pool)
    if n > p * (p - 1) // 2:
        raise SystemExit(f"at most {p * (p - 1) // 2} distinct requests on {ds.name}")
    got = np.empty(0, dtype=np.int64)
    while len(got) < n:
        a, b = rng.integers(0, p, (2, 2 * (n - len(got)) + 16))
        keys = np.minimum(a, b) * p + np.maximum(a, b)
        keys = np.concatenate([got, keys[a != b]])
        _, first = np.unique(keys, return_index=True)
        got = keys[np.sort(first)]
    got = got[:n]
    users, items = ds.user_tokens[ds.inter_user[pool]], ds.item_tokens[ds.inter_item[pool]]
    lines = []
    for a, b in zip((got // p).tolist(), (got % p).tolist()):
        pairs = sorted({(str(users[a]), str(items[a])), (str(users[b]), str(items[b]))})
        lines.append(json.dumps({"kind": "interactions", "pairs": [list(x) for x in pairs]}))
    return lines


#: runs ``llmrec`` and writes its own peak RSS (``VmHWM``, kB) to ``$BENCH_PEAK_FILE`` at exit.
#: ``wait4``'s ``ru_maxrss`` would not do: a child started from this (large) process keeps the
#: parent's resident size as its maximum across ``exec``.
_RUN = """
import atexit, os, runpy, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as f:
        f.write(str(kb))
atexit.register(_peak)
sys.argv = ["llmrec", *sys.argv[1:]]
runpy.run_module("llmrec", run_name="__main__", alter_sys=True)
"""


def _measured(argv: list[str]) -> dict:
    """Wall seconds, peak RSS (MB, that process's own) and exit status of one ``llmrec``
    command run in its own process (with the last line of its stderr on failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        log = Path(tmp) / "stderr"  # a pipe could fill up and block the child
        env = {**os.environ, "BENCH_PEAK_FILE": str(peak)}
        t0 = time.perf_counter()
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _RUN, *argv], stdout=subprocess.DEVNULL, stderr=err, env=env
            )
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        out = {
            "seconds": round(seconds, 2),
            # CPU seconds (user + system): what the wall time is on an idle machine, give or
            # take the threads; on a shared machine the wall time also holds the waiting
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(int(peak.read_text()) / 1024, 1) if peak.is_file() else None,
            "exit": code,
        }
        if code:
            lines = log.read_text(errors="replace").strip().splitlines()
            out["error"] = lines[-1] if lines else ""
    return out


def run(args: argparse.Namespace) -> int:
    from retrieval.store import RetrievalStore

    rows = []
    for n in sorted(args.sizes):
        with tempfile.TemporaryDirectory(prefix="ledger-reads-") as tmp:
            ws = Workspace(Path(tmp) / "ws", dataset=args.dataset, data_dir=args.data_dir)
            common = ["--workspace", str(ws.root), "--dataset", args.dataset]
            if args.data_dir:
                common += ["--data-dir", args.data_dir]
            RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=args.seed, n_clusters=4)
            t0 = time.perf_counter()
            lines = request_lines(ws, n, args.seed)
            path = Path(tmp) / "requests.jsonl"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            made_s = time.perf_counter() - t0
            user = str(ws.dataset.user_tokens[0])
            row = {
                "bench": "ledger-reads",
                "dataset": args.dataset,
                "requests": n,
                "request_file_mb": round(path.stat().st_size / 2**20, 1),
                "requests_written_seconds": round(made_s, 2),
                "forget": _measured(["forget", "--request", str(path), *common]),
                "ledger_mb": round(ws.ledger_path.stat().st_size / 2**20, 1),
                "data_info": _measured(["data", "info", *common]),
                "retrieve": _measured(["retrieve", "--user", user, *common]),
                "audit": _measured(["audit", *common]),
            }
            rows.append(emit(row))
    print(
        "\n| requests | ledger MB | forget s (CPU s) / MB | data info s (CPU s) / MB "
        "| retrieve s (CPU s) / MB | audit s (CPU s) / MB |\n|---|---|---|---|---|---|"
    )
    for r in rows:
        cells = [
            f"{r[k]['seconds']} ({r[k]['cpu_seconds']}) / {r[k]['peak_rss_mb'] or 0:.0f}"
            + ("" if r[k]["exit"] == 0 else f" (exit {r[k]['exit']})")
            for k in ("forget", "data_info", "retrieve", "audit")
        ]
        print(f"| {r['requests']:,} | {r['ledger_mb']} | " + " | ".join(cells) + " |")
    return 0


SUBCOMMANDS: Subcommands = {"ledger-reads": (configure, run)}
