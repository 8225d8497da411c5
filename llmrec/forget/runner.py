"""Applying forget requests: record in the ledger first, then bring every stage up to date.

A request is a transaction across stages (docs/design.md §2.2). :func:`forget` validates the
requests against the dataset (nothing is written if one is bad), records them with a 'pending'
row per stage in one ledger transaction, then runs each stage of
:func:`llmrec.forget.registry.active` (the registered stages, in order). A stage brings its artifacts to the newest ledger
version and only then is marked done, so a process killed at any point leaves the ledger
complete and :func:`resume` (run by every ``llmrec forget``) finishes the work.

One call opens the ledger once and folds its requests into retained views once: every stage
gets the same :class:`~llmrec.forget.stage.StageContext`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext

from llmrec.data.ledger import Ledger
from llmrec.data.requests import ForgetRequest
from llmrec.forget import registry as stage_registry
from llmrec.forget.stage import StageContext
from llmrec.locks import file_lock
from llmrec.workspace import Workspace


def stage_names() -> list[str]:
    """Names of the forget stages, in the order they run."""
    return [s.name for s in stage_registry.active()]


def forget(ws: Workspace, requests: Sequence[ForgetRequest]) -> dict:
    """Validate, record and apply ``requests``; returns a summary for the CLI.

    Before anything is recorded the workspace's artifacts are checked against the ledger
    (:func:`llmrec.forget.audit.preflight`): a registered artifact whose files are gone, an
    artifact the registry does not know, or one claiming ledger versions the ledger does not
    have would be skipped or mis-applied by the stages, so the request is refused instead.
    """
    from llmrec.forget.audit import preflight

    ds = ws.dataset
    for r in requests:
        r.validate(ds)
    with ws.ledger() as led:
        preflight(ws, led)
        recorded = led.record_many(requests, stages=stage_names())
        summary = {
            "requests": [
                {"version": v, "created": c, "kind": r.kind, "description": r.describe()}
                for (v, c), r in zip(recorded, requests)
            ]
        }
        summary.update(resume(ws, led))
    return summary


@contextmanager
def stage_lock(ws: Workspace):
    """Exclusive workspace lock while stages run: concurrent ``forget`` calls record their
    requests in parallel (the ledger serialises them) but apply stages one at a time."""
    with file_lock(ws.root / "stages.lock"):
        yield


def set_policy(ws: Workspace, policy: str) -> dict:
    """Fix the workspace's forget policy (``retrain`` or ``suppress``) and re-apply, at the
    ledger's version, every stage whose artifacts follow it (``follows_policy``: the served
    log); returns each one's details by stage name."""
    ws.set_policy(policy)
    out: dict = {}
    with stage_lock(ws), ws.ledger() as led:
        ctx = StageContext.open(ws, led)
        for stage in stage_registry.active():
            if getattr(stage, "follows_policy", False):
                out[stage.name] = stage.apply(ctx)
    return out


def resume(ws: Workspace, ledger: Ledger | None = None) -> dict:
    """Run every stage that still has pending requests (``ledger``: an open ledger of ``ws``
    to use); returns per-stage timings and details."""
    out: dict = {"stages": {}}
    stages = stage_registry.active()
    with stage_lock(ws), ws.ledger() if ledger is None else nullcontext(ledger) as led:
        for stage in stages:
            led.ensure_stage(stage.name)
        pending = {s.name: led.pending(s.name) for s in stages}
        todo = [v for vs in pending.values() for v in vs]
        if todo:
            # the version every stage had reached: most artifacts are there
            ctx = StageContext.open(ws, led, also=(min(todo) - 1,))
            for stage in stages:
                if not pending[stage.name]:
                    continue
                t0 = time.perf_counter()
                detail = stage.apply(ctx)
                led.set_stage_upto(ctx.version, stage.name, "done")
                out["stages"][stage.name] = {
                    "versions": [v for v in pending[stage.name] if v <= ctx.version],
                    "seconds": time.perf_counter() - t0,
                    **(detail or {}),
                }
        out["ledger_version"] = led.version
    return out
