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

from llmrec.data.requests import ForgetRequest
from llmrec.errors import ArtifactError
from llmrec.locks import file_lock
from llmrec.workspace import Workspace

# name -> "module:function"; order is the order stages run in
STAGES: dict[str, str] = {}


def register_stage(name: str, target: str) -> None:
    """Register a stage applier ``"package.module:function"`` (run after the existing ones)."""
    STAGES[name] = target


register_stage("retrieval", "retrieval.forget:apply")
register_stage("adapters", "llmrec.llm.adapters:apply")
# CF candidate sources of the LLM path (retrieval.sources): exact ones are retrained
register_stage("candidate-source", "retrieval.sources:apply")
# the served-recommendation log is scrubbed last, after every artifact that serves lists
register_stage("served", "llmrec.pipelines.served:apply")


def _resolve(target: str) -> Callable[[Workspace, int], dict]:
    mod, _, fn = target.partition(":")
    return getattr(importlib.import_module(mod), fn)


def forget(ws: Workspace, requests: Sequence[ForgetRequest]) -> dict:
    """Validate, record and apply ``requests``; returns a summary for the CLI.

    Before anything is recorded the workspace's artifacts are checked against the ledger
    (:func:`llmrec.pipelines.audit.preflight`): a registered artifact whose files are gone, an
    artifact the registry does not know, or one claiming ledger versions the ledger does not
    have would be skipped or mis-applied by the stages, so the request is refused instead.
    """
    from llmrec.pipelines.audit import preflight

    ds = ws.dataset
    for r in requests:
        r.validate(ds)
    preflight(ws)
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
    with file_lock(ws.root / "stages.lock"):
        yield


def require_applied(ws: Workspace, what: str, version: int | None = None) -> None:
    """Readers call this before serving: :class:`ArtifactError` (one line, saying to run
    ``llmrec forget``) if any stage of any request is unfinished, or if ``version`` (the
    artifact's) lags the ledger's newest."""
    if not ws.ledger_path.exists():
        return
    with ws.ledger() as led:
        pending = led.unfinished()
        latest = led.version
    if pending:
        stage, versions = next(iter(sorted(pending.items())))
        raise ArtifactError(
            f"{what} is stale: forget request(s) {versions[:5]} are not yet applied to stage "
            f"{stage!r}; run 'llmrec forget' to finish them"
        )
    if version is not None and version < latest:
        raise ArtifactError(
            f"{what} is stale: it reflects ledger version {version}, the ledger is at {latest}; "
            "run 'llmrec forget' to apply the pending requests"
        )


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
