"""Run folders (``runs/``): the per-user rows of result files and the workspaces a run kept.

``llmrec compare`` deletes its scratch workspaces at the end unless ``--keep-workspaces``; a
kept one (registered in ``workspaces.json``, :meth:`~llmrec.workspace.Workspace.keep_workspaces`)
holds retrieval stores, adapters and a ledger of its own, built from this workspace's data. A
workspace folder found under ``runs/`` without being registered (a run of an older version) is
adopted: registered, then treated the same way.

* **apply**: every kept workspace records this ledger's requests (its ledger is a superset:
  the comparison's own requests come on top) and runs its forget stages; one that cannot follow
  (its own requests plus these would leave it no training data) is deleted, being scratch.
  Every ``results.json`` under ``runs/`` loses the per-user rows (user lists and the values
  paired with them) of the users who lost data since the run was made.
* **audit**: a kept workspace that lags this ledger or fails its own audit, an unregistered
  workspace under ``runs/``, and a result file still naming such a user are violations.

Result files name users by internal index (``forget_users``, ``neighbours``, ``controls``,
``stream_users``, ``eval_users`` and every ``per_user`` table's ``users``); a run records the
ledger version it was made at (``config.ledger_version``; 0 when absent), and the stage the
version it scrubbed the file to (``scrubbed_at_ledger_version``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.forget.registry import register_stage
from llmrec.forget.stage import Found, StageAudit, StageContext, finding
from llmrec.io import atomic_write_text
from llmrec.workspace import Workspace

#: the key a result file records the ledger version its per-user rows were scrubbed to under
SCRUBBED_AT = "scrubbed_at_ledger_version"
#: keys of result files whose value is a list of internal user indices
USER_LISTS = ("forget_users", "neighbours", "controls", "stream_users", "eval_users")


# ------------------------------------------------------------------ kept workspaces
def workspaces(ws: Workspace) -> tuple[list[Path], list[Path]]:
    """``(registered, unregistered)`` workspace folders under the workspace's run folders."""
    registered = [p for p in ws.kept_workspaces() if (p / "workspace.json").is_file()]
    known = {p.resolve() for p in registered}
    runs = ws.root / "runs"
    found = sorted(p.parent for p in runs.rglob("workspace.json")) if runs.is_dir() else []
    return registered, [p for p in found if p.resolve() not in known]


def _follow(ctx: StageContext, sub_root: Path) -> str:
    """Bring one kept workspace to this ledger; delete it when it cannot follow."""
    from llmrec.forget.runner import forget

    requests = [e.request for e in ctx.entries_between(0)]
    try:
        sub = Workspace(sub_root)
        if requests:
            forget(sub, requests)
        return "updated"
    except LlmrecError as exc:
        shutil.rmtree(sub_root)
        return f"deleted ({str(exc)[:200]})"


def _lags(ctx: StageContext, sub: Workspace) -> list[int]:
    """Versions of this ledger whose request the kept workspace's ledger lacks."""
    if not ctx.version:
        return []
    entries = ctx.entries_between(0)  # a kept workspace must hold this ledger's whole history
    if not sub.ledger_path.exists():
        return [e.version for e in entries]
    with sub.ledger() as led:
        held = {e.request.content_hash for e in led.entries()}
    return [e.version for e in entries if e.request.content_hash not in held]


# ------------------------------------------------------------------ result files
def result_files(ws: Workspace) -> list[Path]:
    runs = ws.root / "runs"
    return sorted(runs.glob("*/results.json")) if runs.is_dir() else []


def _run_version(results: dict) -> int:
    v = results.get("config", {}).get("ledger_version", 0)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def affected_users(ctx: StageContext, since: int) -> set[int]:
    """Internal indices of the users who lost data (the user, or any of their interactions)
    between ledger version ``since`` and the context's version."""
    before = ctx.view_at(min(since, ctx.version))
    now = ctx.view
    ds = now.dataset
    lost = before.keep & ~now.keep
    users = set(np.unique(ds.inter_user[lost]).tolist())
    users |= set(np.flatnonzero(now.forgotten_users & ~before.forgotten_users).tolist())
    return users


def scrub_rows(obj: object, users: set[int]) -> tuple[object, int]:
    """``obj`` (a parsed result file) without the per-user rows of ``users``; returns the
    scrubbed copy and how many rows were dropped."""
    dropped = 0

    def walk(o: object) -> object:
        nonlocal dropped
        if isinstance(o, list):
            return [walk(x) for x in o]
        if not isinstance(o, dict):
            return o
        out = {k: walk(v) for k, v in o.items()}
        for key in USER_LISTS:
            if isinstance(out.get(key), list):
                keep = [u for u in out[key] if u not in users]
                dropped += len(out[key]) - len(keep)
                out[key] = keep
        rows = out.get("users")
        if isinstance(rows, list):
            mask = [u not in users for u in rows]
            if not all(mask):
                dropped += mask.count(False)
                n = len(rows)
                for k, v in out.items():
                    if isinstance(v, list) and len(v) == n:  # a column paired with the users
                        out[k] = [x for x, m in zip(v, mask) if m]
        return out

    return walk(obj), dropped


def named_users(obj: object) -> set[int]:
    """Every internal user index a result file names in a per-user row."""
    found: set[int] = set()

    def walk(o: object) -> None:
        if isinstance(o, list):
            for x in o:
                walk(x)
        elif isinstance(o, dict):
            for k, v in o.items():
                if (k in USER_LISTS or k == "users") and isinstance(v, list):
                    found.update(u for u in v if isinstance(u, int) and not isinstance(u, bool))
                walk(v)

    walk(obj)
    return found


def _read(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


# ------------------------------------------------------------------ the stage's work
def apply(ctx: StageContext) -> dict:
    """Kept workspaces follow this ledger; result files lose the rows of affected users."""
    registered, unregistered = workspaces(ctx.ws)
    if unregistered:
        ctx.ws.keep_workspaces(unregistered)  # adopted: from now on covered like the others
    kept = {str(p): _follow(ctx, p) for p in [*registered, *unregistered]}
    scrubbed = {}
    for path in result_files(ctx.ws):
        obj = _read(path)
        if obj is None:
            continue
        new, dropped = scrub_rows(obj, affected_users(ctx, _run_version(obj)))
        if dropped or obj.get(SCRUBBED_AT) != ctx.version:
            # the version the rows now reflect (a second apply at it changes nothing)
            atomic_write_text(path, json.dumps({**new, SCRUBBED_AT: ctx.version}, indent=1))
            scrubbed[str(path)] = dropped
    return {"kept_workspaces": kept, "result_rows_scrubbed": scrubbed}


def audit(ctx: StageContext) -> StageAudit:
    """Kept workspaces behind this ledger or failing their own audit, unregistered workspaces
    under ``runs/``, result files naming users who lost data since their run."""
    from llmrec.forget.audit import run_audit

    findings: list[dict] = []
    registered, unregistered = workspaces(ctx.ws)
    for p in unregistered:
        findings.append(
            finding(
                "runs:workspace",
                p,
                "a workspace under runs/ that forget has not covered (not registered in "
                "workspaces.json): delete it, or the next 'llmrec forget' request adopts it",
            )
        )
    for p in registered:
        sub = Workspace(p)
        lag = _lags(ctx, sub)
        if lag:
            findings.append(
                finding(
                    "runs:workspace",
                    p,
                    f"kept workspace lacks requests v{lag[:5]} of this ledger (run 'llmrec "
                    "forget' to resume)",
                )
            )
            continue
        for f in run_audit(sub)["violations"]:
            findings.append({**f, "artifact": f"runs:{p.name}:{f['artifact']}"})
    files = result_files(ctx.ws)
    for path in files:
        obj = _read(path)
        if obj is None:
            continue
        named = named_users(obj) & affected_users(ctx, _run_version(obj))
        if named:
            findings.append(
                finding(
                    "runs:results",
                    path,
                    f"per-user rows of {len(named)} user(s) who lost data since the run (run "
                    "'llmrec forget' to scrub them)",
                )
            )
    names = [f"runs:{p.name}" for p in registered] + [f"runs:{p.parent.name}" for p in files]
    return StageAudit(findings, names)


@register_stage
class RunsStage:
    """Run folders: kept workspaces follow the ledger; result files lose the per-user rows of
    users who lost data since their run (module docstring)."""

    name = "runs"
    order = 900  # after every stage of this workspace's own artifacts, before the served log

    def discover(self, ws: Workspace) -> list[Found]:
        registered, unregistered = workspaces(ws)
        found = [Found(f"runs:{p.name}", "kept-workspace", p) for p in registered + unregistered]
        return found + [Found(f"runs:{p.parent.name}", "run-results", p) for p in result_files(ws)]

    def apply(self, ctx: StageContext) -> dict:
        return apply(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        return audit(ctx)
