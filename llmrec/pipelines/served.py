"""The served-recommendation log: what was shown to whom, at which ledger version.

It holds user data, so it is a forget stage like any artifact: :func:`apply` drops entries of
forgotten users and removes forgotten items and forgotten (user, item) pairs from the lists
(rewriting the file atomically), and :func:`audit` reports any that remain.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from llmrec.data.retained import RetainedView
from llmrec.io import atomic_write_text
from llmrec.workspace import Workspace

try:  # POSIX advisory lock so concurrent writers and the scrubber do not interleave
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def log_path(ws: Workspace) -> Path:
    return ws.artifact_path("served", "log.jsonl")


class _Locked:
    def __init__(self, path: Path):
        self.lock = path.with_suffix(".lock")

    def __enter__(self):
        self.fh = open(self.lock, "a")
        if fcntl is not None:
            fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if fcntl is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def log_served(
    ws: Workspace, user: str, items: list[str], version: int, source: str, **meta
) -> None:
    """Append one served list (dataset tokens) to the log."""
    path = log_path(ws)
    entry = {
        "time": time.time(),
        "user": str(user),
        "items": [str(i) for i in items],
        "ledger_version": int(version),
        "source": source,
        **meta,
    }
    with _Locked(path), open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_log(ws: Workspace) -> list[dict]:
    path = log_path(ws)
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _forgotten_sets(view: RetainedView) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    ds = view.dataset
    users = {str(t) for t in ds.user_tokens[view.forgotten_users]}
    items = {str(t) for t in ds.item_tokens[view.forgotten_items]}
    gone = np.flatnonzero(~view.keep)
    pairs = {
        (str(ds.user_tokens[ds.inter_user[i]]), str(ds.item_tokens[ds.inter_item[i]])) for i in gone
    }
    return users, items, pairs


def apply(ws: Workspace, version: int) -> dict:
    """Scrub the log to ``version``: forgotten users' entries go, forgotten items leave lists."""
    path = log_path(ws)
    if not path.is_file():
        return {"entries": 0, "scrubbed": 0}
    view = ws.view(version)
    users, items, pairs = _forgotten_sets(view)
    with _Locked(path):
        entries = read_log(ws)
        out, scrubbed = [], 0
        for e in entries:
            if e["user"] in users:
                scrubbed += 1
                continue
            kept = [i for i in e["items"] if i not in items and (e["user"], i) not in pairs]
            if len(kept) != len(e["items"]):
                scrubbed += 1
                e = {**e, "items": kept}
            out.append(e)
        if scrubbed:
            atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in out))
    return {"entries": len(out), "scrubbed": scrubbed}


def audit(ws: Workspace, view: RetainedView) -> list[dict]:
    """Findings for every served entry that still shows forgotten data."""
    users, items, pairs = _forgotten_sets(view)
    findings = []
    for n, e in enumerate(read_log(ws), start=1):
        bad = []
        if e["user"] in users:
            bad.append(f"forgotten user {e['user']}")
        bad += [f"forgotten item {i}" for i in e["items"] if i in items]
        bad += [
            f"forgotten interaction ({e['user']}, {i})"
            for i in e["items"]
            if (e["user"], i) in pairs
        ]
        if bad:
            findings.append(
                {
                    "artifact": "served-log",
                    "path": str(log_path(ws)),
                    "problem": f"entry {n}: " + "; ".join(bad[:3]),
                }
            )
    return findings
