"""Applying forget requests: record in the ledger first, then bring every stage up to date.

A request is a transaction across stages. :func:`forget` validates the requests against the
dataset (nothing is written if one is bad), records them with a 'pending' row per stage in one
ledger transaction, then runs each stage. A stage applier brings its artifacts to the newest
ledger version and only then marks the stage done, so a process killed at any point leaves the
ledger complete and :func:`resume` (run by every ``llmrec forget``) finishes the work.

Stages are registered by dotted path so that importing the ledger does not import FAISS or torch.
An applier has the signature ``apply(workspace, version) -> dict`` and must be idempotent.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: single-process use
    fcntl = None

from llmrec.data.requests import ForgetRequest
from llmrec.workspace import Workspace

# name -> "module:function"; order is the order stages run in
STAGES: dict[str, str] = {}


def register_stage(name: str, target: str) -> None:
    """Register a stage applier ``"package.module:function"`` (run after the existing ones)."""
    STAGES[name] = target


register_stage("retrieval", "retrieval.forget:apply")
register_stage("adapters", "llmrec.llm.adapters:apply")
# the served-recommendation log is scrubbed last, after every artifact that serves lists
register_stage("served", "llmrec.pipelines.served:apply")


def _resolve(target: str) -> Callable[[Workspace, int], dict]:
    mod, _, fn = target.partition(":")
    return getattr(importlib.import_module(mod), fn)


def forget(ws: Workspace, requests: Sequence[ForgetRequest]) -> dict:
    """Validate, record and apply ``requests``; returns a summary for the CLI."""
    ds = ws.dataset
    for r in requests:
        r.validate(ds)
    with ws.ledger() as led:
        recorded = led.record_many(requests, stages=list(STAGES))
    summary = {
        "requests": [
            {"version": v, "created": c, "kind": r.kind, "description": r.describe()}
            for (v, c), r in zip(recorded, requests)
        ]
    }
    summary.update(resume(ws))
    return summary


@contextmanager
def stage_lock(ws: Workspace):
    """Exclusive workspace lock while stages run: concurrent ``forget`` calls record their
    requests in parallel (the ledger serialises them) but apply stages one at a time."""
    ws.root.mkdir(parents=True, exist_ok=True)
    with open(ws.root / "stages.lock", "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def resume(ws: Workspace) -> dict:
    """Run every stage that still has pending requests; returns per-stage timings."""
    out: dict = {"stages": {}}
    with stage_lock(ws), ws.ledger() as led:
        for name in STAGES:
            led.ensure_stage(name)
        for name, target in STAGES.items():
            pending = led.pending(name)
            if not pending:
                continue
            version = led.version
            t0 = time.perf_counter()
            detail = _resolve(target)(ws, version)
            led.set_stage_upto(version, name, "done")
            out["stages"][name] = {
                "versions": pending,
                "seconds": time.perf_counter() - t0,
                **(detail or {}),
            }
        out["ledger_version"] = led.version
    return out
