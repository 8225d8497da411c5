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
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext, suppress

from llmrec.data import snapshot
from llmrec.data.ledger import Ledger, LedgerEntry
from llmrec.data.parts import require_training_data
from llmrec.data.requests import ForgetRequest
from llmrec.forget import registry as stage_registry
from llmrec.forget.stage import StageContext
from llmrec.locks import file_lock
from llmrec.workspace import Workspace


def stage_names() -> list[str]:
    """Names of the forget stages, in the order they run."""
    return [s.name for s in stage_registry.active()]


def forget(
    ws: Workspace,
    requests: Sequence[ForgetRequest],
    before_record: Callable[[], None] | None = None,
) -> dict:
    """Validate, record and apply ``requests``; returns a summary for the CLI.

    Before anything is recorded the workspace's artifacts are checked against the ledger
    (:func:`llmrec.forget.audit.preflight`): a registered artifact whose files are gone, an
    artifact the registry does not know, or one claiming ledger versions the ledger does not
    have would be skipped or mis-applied by the stages, so the request is refused instead. So
    is a request that would leave no training interaction (no artifact could be rebuilt: every
    later forget would fail). ``before_record`` runs once all that passed, before recording
    (the CLI saves its settings there, so a refused request changes nothing).
    """
    from llmrec.forget.audit import preflight

    ds = ws.dataset
    for r in requests:
        r.validate(ds)
    with ws.ledger() as led:
        preflight(ws, led)
        ctx = StageContext.open(ws, led)
        require_training_data(ws.split, ctx.view, requests)
        if before_record is not None:
            before_record()
        recorded = led.record_many(requests, stages=stage_names())
        now = time.time()
        new = sorted(
            {
                v: LedgerEntry(v, r, now) for (v, created), r in zip(recorded, requests) if created
            }.values(),
            key=lambda e: e.version,
        )
        summary = {
            "requests": [
                {"version": v, "created": c, "kind": r.kind, "description": r.describe()}
                for (v, c), r in zip(recorded, requests)
            ]
        }
        # the context folded before recording, extended with what was recorded (resume folds
        # afresh if another process recorded in between)
        ctx = _extended(ctx, new)
        summary.update(resume(ws, led, ctx))
        if new and ctx.version == led.version:
            # readers load this and fold nothing (llmrec.data.snapshot)
            with suppress(OSError):
                snapshot.save(led, ctx.view)
    return summary


def _extended(ctx: StageContext, new: Sequence[LedgerEntry]) -> StageContext:
    """``ctx`` with ``new`` (entries recorded right after its version, in order) folded onto
    its view, without reading the ledger again; its older views are kept (most artifacts are
    at the old version)."""
    if not new:
        return ctx
    view = ctx.view.copy().fold((e.version, e.request) for e in new)
    views = {**ctx.views, new[-1].version: view}
    known = {**ctx.known, **{e.version: e for e in new}}
    return StageContext(ctx.ws, ctx.ledger, new[-1].version, views, known)


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


def resume(ws: Workspace, ledger: Ledger | None = None, ctx: StageContext | None = None) -> dict:
    """Run every stage that still has pending requests (``ledger``: an open ledger of ``ws``
    to use; ``ctx``: its context, already folded); returns per-stage timings and details."""
    out: dict = {"stages": {}}
    stages = stage_registry.active()
    with stage_lock(ws), ws.ledger() if ledger is None else nullcontext(ledger) as led:
        for stage in stages:
            led.ensure_stage(stage.name)
        pending = {s.name: led.pending(s.name) for s in stages}
        todo = [v for vs in pending.values() for v in vs]
        if todo:
            # the version every stage had reached: most artifacts are there
            if ctx is None or ctx.version != led.version:
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
