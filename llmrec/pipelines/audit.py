"""``llmrec audit``: scan every artifact that can hold user data for forgotten records.

Each artifact family registers an auditor ``audit(workspace, view) -> list[finding]`` by dotted
path (so the scan imports only what exists). A finding is a dict with ``artifact`` (a name the
user recognises), ``path`` and ``problem``. Besides the registered auditors, the ledger itself is
checked: integrity, every stage of every request done, every registered artifact present and not
older than the ledger.
"""

from __future__ import annotations

import importlib
import sqlite3

from llmrec.pipelines import forget as forget_pipeline
from llmrec.workspace import Workspace

AUDITORS: dict[str, str] = {
    "retrieval": "retrieval.audit:audit",
    "adapters": "llmrec.llm.audit:audit",
    "served-log": "llmrec.pipelines.served:audit",
    "checkpoints": "llmrec.pipelines.audit:audit_checkpoints",
}


def register_auditor(name: str, target: str) -> None:
    AUDITORS[name] = target


def audit_ledger(ws: Workspace) -> list[dict]:
    findings = []
    path = ws.ledger_path
    if not path.exists():
        return findings
    db = sqlite3.connect(path)
    try:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            findings.append(
                {"artifact": "ledger", "path": str(path), "problem": f"integrity check: {ok}"}
            )
        for stage in forget_pipeline.STAGES:
            rows = db.execute(
                "SELECT r.version FROM requests r LEFT JOIN stages s ON s.version=r.version AND s.stage=? "
                "WHERE s.status IS NULL OR s.status!='done' ORDER BY r.version",
                (stage,),
            ).fetchall()
            if rows:
                vs = [r[0] for r in rows]
                findings.append(
                    {
                        "artifact": f"stage:{stage}",
                        "path": str(path),
                        "problem": f"requests {vs[:10]} not applied (run 'llmrec forget' to resume)",
                    }
                )
    finally:
        db.close()
    return findings


def audit_checkpoints(ws: Workspace, view) -> list[dict]:
    """Registered model checkpoints must reflect the newest ledger version (else they may hold
    forgotten data: retrain or unlearn them)."""
    from llmrec.models import load_model

    findings = []
    with ws.ledger() as led:
        arts = [a for a in led.artifacts() if a["kind"] == "checkpoint"]
    for a in arts:
        try:
            m = load_model(a["path"])
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            findings.append(
                {
                    "artifact": a["name"],
                    "path": a["path"],
                    "problem": f"unreadable checkpoint ({exc})",
                }
            )
            continue
        if m.ledger_version != a["ledger_version"]:
            findings.append(
                {
                    "artifact": a["name"],
                    "path": a["path"],
                    "problem": f"file says ledger v{m.ledger_version}, registry says v{a['ledger_version']}",
                }
            )
        if m.ledger_version < view.version:
            findings.append(
                {
                    "artifact": a["name"],
                    "path": a["path"],
                    "problem": f"stale: reflects ledger v{m.ledger_version}, ledger is at v{view.version}",
                }
            )
    return findings


def run_audit(ws: Workspace) -> dict:
    """All findings plus what was scanned."""
    view = ws.view()
    findings = audit_ledger(ws)
    scanned = ["ledger"]
    for name, target in AUDITORS.items():
        mod, _, fn = target.partition(":")
        findings += getattr(importlib.import_module(mod), fn)(ws, view)
        scanned.append(name)
    return {
        "ledger_version": view.version,
        "scanned": scanned,
        "violations": findings,
        "ok": not findings,
    }
