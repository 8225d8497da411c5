"""``llmrec audit``: scan every artifact that can hold user data for forgotten records.

The audit trusts nothing it can check:

* **the ledger**: SQLite's structure check, every stage of every request done
  (:func:`audit_ledger`);
* **discovery**: artifacts are found from the workspace's files (retrieval stores, adapter
  shards, CF checkpoints, the base LM) *and* from the ledger's registry; a store or adapter the
  registry does not know, or a registered artifact whose files are partly gone, is a violation
  (the forget stages would skip it); unregistered checkpoints are audited from their files;
* **ledger identity**: an artifact claiming a ledger version the ledger does not have, or built
  on another history (:meth:`~llmrec.data.ledger.Ledger.head`), means the ledger was lost or
  replaced;
* **content hashes** recorded when each artifact was written (:mod:`llmrec.integrity`): a
  garbled, truncated or edited file is named;
* then each forget stage's own audit (:func:`llmrec.forget.registry.active`, the same list
  and names the forget runner uses), which re-derives what it can from the retained data. A stage
  whose artifact cannot be read reports that as a finding. Each stage is shown with its status:
  ``clean``, ``approximate`` (a CF checkpoint updated by an approximate unlearning method: not a
  violation, named with its method), ``violation`` or ``empty``.

The ledger is opened once and the retained view built once for the whole scan. A finding is a
dict with ``artifact`` (a name the user recognises), ``path`` and ``problem``.

Recorded hashes only prove a file is the one *registered*: pre-forget weights whose manifest and
registry hashes were rewritten pass them. ``llmrec audit --deep`` (:func:`rederive`) adds the
slow level: every stage with a ``rederive`` hook (:class:`~llmrec.forget.stage.Rederivable`)
rebuilds its exact artifacts from the ledger's retained data, outside the workspace, and
compares them byte for byte; each stage's re-derivation is timed (wall and CPU seconds).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import nullcontext
from pathlib import Path

from llmrec.data import snapshot
from llmrec.data.ledger import Ledger
from llmrec.errors import ArtifactError, LlmrecError
from llmrec.forget import registry as stage_registry
from llmrec.forget.stage import (
    Found,
    Rederivable,
    RederiveOptions,
    Stage,
    StageAudit,
    StageContext,
    finding,
)
from llmrec.integrity import verify
from llmrec.progress import say
from llmrec.workspace import Workspace


# ------------------------------------------------------------------------------ discovery
def discover(ws: Workspace) -> list[Found]:
    """Artifacts present in the workspace's files, whatever the ledger says: each stage's
    :meth:`~llmrec.forget.stage.Stage.discover`, in run order."""
    return [f for stage in stage_registry.registered() for f in stage.discover(ws)]


def consistency(
    ws: Workspace, ledger: Ledger | None = None, hashes: bool = True
) -> tuple[list[dict], list[str]]:
    """Registry versus files versus ledger history; ``hashes`` also verifies content hashes
    (not to be confused with ``llmrec audit --deep``, which re-derives artifacts:
    :func:`rederive`).
    ``ledger``: an open ledger of ``ws`` (default: open one if the workspace has a ledger).

    Returns ``(findings, notes)``; notes are registered artifacts deleted as a whole (no data
    left behind, nothing to forget in them).
    """
    findings, notes, _ = _consistency(ws, ledger, hashes)
    return findings, notes


def _consistency(
    ws: Workspace, ledger: Ledger | None, hashes: bool
) -> tuple[list[dict], list[str], list[dict]]:
    """:func:`consistency`'s findings and notes, plus the findings that block a forget."""
    findings: list[dict] = []
    notes: list[str] = []
    blocking: list[dict] = []
    found = discover(ws)
    staged_kinds = {f.kind for f in found if f.staged}
    if ledger is not None or ws.ledger_path.exists():
        with ws.ledger() if ledger is None else nullcontext(ledger) as led:
            latest = led.version
            registry = led.artifacts()
            claimed = {a["ledger_version"] for a in registry} | {
                f.claimed_version for f in found if f.claimed_version is not None
            }
            # ascending: each head hashes on from the one before (one pass over the chain)
            heads = {v: led.head(v) for v in sorted(claimed) if v <= latest}
    else:
        latest, registry, heads = 0, [], {0: None}
    replaced = "the ledger was lost or replaced (restore it from a backup, or rebuild the artifact)"
    by_name = {a["name"]: a for a in registry}
    for a in registry:
        path = Path(a["path"])
        name = a["name"]
        before = len(findings)
        if a["ledger_version"] > latest:
            findings.append(
                finding(
                    name,
                    path,
                    f"registered at ledger v{a['ledger_version']} but the ledger "
                    f"is at v{latest}: {replaced}",
                )
            )
        head = a["detail"].get("ledger_head")
        if head and heads.get(a["ledger_version"]) not in (None, head):
            findings.append(
                finding(
                    name,
                    path,
                    f"built on another ledger history than v{a['ledger_version']}"
                    f" of this one: {replaced}",
                )
            )
        if not path.exists():
            notes.append(f"{name}: deleted ({path})")
            continue
        recorded = a["detail"].get("sha256")
        if isinstance(recorded, dict) and recorded:
            if hashes:
                problems = verify(path, recorded)
            else:
                problems = [
                    f"{rel or path.name} is missing"
                    for rel in recorded
                    if not (path / rel if rel else path).is_file()
                ]
            for p in problems:
                findings.append(finding(name, path, p))
        if a["kind"] in staged_kinds:
            blocking += findings[before:]
    for f in found:
        before = len(findings)
        if f.claimed_version is not None and f.claimed_version > latest:
            findings.append(
                finding(
                    f.name,
                    f.path,
                    f"claims ledger v{f.claimed_version} but the ledger is "
                    f"at v{latest}: {replaced}",
                )
            )
        elif f.claimed_head and heads.get(f.claimed_version) not in (None, f.claimed_head):
            findings.append(
                finding(
                    f.name,
                    f.path,
                    f"built on another ledger history than "
                    f"v{f.claimed_version} of this one: {replaced}",
                )
            )
        if f.name not in by_name and f.staged:
            findings.append(
                finding(
                    f.name,
                    f.path,
                    "present in the workspace but not in the ledger's "
                    "registry (rows deleted or ledger replaced): forgets would skip it; "
                    "rebuild it",
                )
            )
        if f.problem:
            findings.append(finding(f.name, f.path, f.problem))
        if f.staged or f.problem:
            blocking += findings[before:]
        if f.unusable:
            blocking.append(finding(f.name, f.path, f.unusable))
    blocking += [f for f in findings if "ledger" in f["problem"] and f not in blocking]
    return findings, notes, blocking


def preflight(ws: Workspace, ledger: Ledger | None = None) -> None:
    """Refuse to record a request the stages could not apply to every artifact (cheap: no
    hashing). :class:`ArtifactError` with the first problem."""
    _, _, staged = _consistency(ws, ledger, hashes=False)
    if staged:
        f = staged[0]
        more = f" (and {len(staged) - 1} more: see 'llmrec audit')" if len(staged) > 1 else ""
        raise ArtifactError(f"refusing to forget: {f['artifact']}: {f['problem']}{more}")


# ------------------------------------------------------------------------------ ledger
def audit_ledger(ws: Workspace) -> list[dict]:
    """The ledger file's own findings: SQLite's structure check, and every request done by every
    active stage.

    ``PRAGMA quick_check``, not ``integrity_check``: both read every page and check the b-trees,
    the records and the NOT NULL/CHECK constraints, so a garbled, truncated or partly overwritten
    file is caught; ``integrity_check`` also cross-checks every index entry against its row,
    which costs O(N log N) (about 5 times quick_check's time on a 10^6-request ledger) and
    protects nothing the audit relies on: an index mismatch cannot change a request's content, which the hash chain
    (:meth:`~llmrec.data.ledger.Ledger.head`, checked against every artifact's and the
    snapshot's recorded head) covers row by row. Stage completeness is counted in one pass over
    the stage rows (N requests numbered 1..N, each stage with N done rows among them); only a
    shortfall lists the versions.
    """
    findings = []
    path = ws.ledger_path
    if not path.exists():
        return findings
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [finding("ledger", path, f"cannot open: {exc}")]
    try:
        ok = db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            findings.append(finding("ledger", path, f"integrity check: {ok}"))
        for stage in _unfinished_stages(db):
            rows = db.execute(
                "SELECT r.version FROM requests r LEFT JOIN stages s ON s.version=r.version AND s.stage=? "
                "WHERE s.status IS NULL OR s.status!='done' ORDER BY r.version",
                (stage,),
            ).fetchall()
            if rows:
                vs = [r[0] for r in rows]
                findings.append(
                    finding(
                        f"stage:{stage}",
                        path,
                        f"requests {vs[:10]} not applied (run 'llmrec forget' to resume)",
                    )
                )
    except sqlite3.Error as exc:
        findings.append(finding("ledger", path, f"unreadable ({exc}): restore it from a backup"))
    finally:
        db.close()
    return findings


def _unfinished_stages(db: sqlite3.Connection) -> list[str]:
    """Active stages that may lack a done row for some request: those whose done rows among
    versions 1..N do not number N when the requests are exactly versions 1..N (versions are
    unique, so N rows there are one per request); every active stage otherwise."""
    names = [s.name for s in stage_registry.active()]
    n, top = db.execute("SELECT COUNT(*), COALESCE(MAX(version), 0) FROM requests").fetchone()
    if n != top:
        return names
    done = dict(
        db.execute(
            "SELECT stage, COUNT(*) FROM stages WHERE status='done' AND version BETWEEN 1 AND ? "
            "GROUP BY stage",
            (top,),
        ).fetchall()
    )
    return [s for s in names if done.get(s, 0) != n]


def _run_stage_audit(stage: Stage, ctx: StageContext) -> StageAudit:
    try:
        return stage.audit(ctx)
    except Exception as exc:  # noqa: BLE001 - whatever breaks an audit is a finding
        # the artifact could not even be read: that is a finding, not a crash
        return StageAudit(
            [
                finding(
                    stage.name, ctx.ws.root / "artifacts", f"cannot be audited: {_first_line(exc)}"
                )
            ]
        )


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def rederive(ctx: StageContext, options: RederiveOptions) -> tuple[list[dict], dict[str, dict]]:
    """``llmrec audit --deep``: each active stage with a ``rederive`` hook rebuilds its exact
    artifacts from the retained data and compares them byte for byte. Returns the findings and,
    per stage, what was re-derived, what was not (with why) and the wall / CPU seconds taken."""
    findings: list[dict] = []
    stages: dict[str, dict] = {}
    for stage in stage_registry.active():
        if not isinstance(stage, Rederivable):
            continue
        say(f"audit --deep: {stage.name}: re-deriving")
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            rep = stage.rederive(ctx, options)
        except Exception as exc:  # noqa: BLE001 - whatever breaks a re-derivation is a finding
            rep = StageAudit(
                [
                    finding(
                        stage.name,
                        ctx.ws.root / "artifacts",
                        f"cannot be re-derived: {_first_line(exc)}",
                    )
                ]
            )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        findings += rep.findings
        status = rep.status if rep.artifacts or rep.findings or not rep.not_rederived else "partial"
        stages[stage.name] = {
            "status": status,
            "rederived": rep.artifacts,
            "not_rederived": rep.not_rederived,
            "violations": len(rep.findings),
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
        }
        say(
            f"audit --deep: {stage.name}: {len(rep.artifacts)} re-derived, "
            f"{len(rep.findings)} differ, in {wall:.1f}s ({cpu:.1f} CPU s)"
        )
    return findings, stages


def run_audit(ws: Workspace, deep: RederiveOptions | None = None) -> dict:
    """All findings, what was scanned and each stage's status (module docstring); ``deep``:
    also re-derive the exact artifacts (:func:`rederive`), reported under ``rederived``."""
    findings = audit_ledger(ws)
    ledger = None
    try:
        if ws.ledger_path.exists():
            ledger = ws.ledger()
            findings += [
                finding("retained-view snapshot", p, f"not used: {problem}")
                for p, problem in snapshot.problems(ledger, ws.dataset, ledger.version)
            ]
        ctx = StageContext.open(ws, ledger)
    except (LlmrecError, sqlite3.Error, ValueError, KeyError) as exc:
        if ledger is not None:
            ledger.close()
        findings.append(finding("ledger", ws.ledger_path, f"unreadable: {str(exc)[:300]}"))
        return {"ledger_version": None, "scanned": ["ledger"], "violations": findings, "ok": False}
    rederived: dict[str, dict] | None = None
    try:
        more, notes = consistency(ws, ledger)
        findings += more
        scanned = ["ledger", "registry"]
        stages: dict[str, dict] = {}
        for stage in stage_registry.active():
            rep = _run_stage_audit(stage, ctx)
            findings += rep.findings
            scanned.append(stage.name)
            stages[stage.name] = {
                "status": rep.status,
                "artifacts": rep.artifacts,
                "approximate": rep.approximate,
                "violations": len(rep.findings),
            }
        if deep is not None:
            more, rederived = rederive(ctx, deep)
            findings += more
    finally:
        if ledger is not None:
            ledger.close()
    out = {
        "ledger_version": ctx.version,
        "scanned": scanned,
        "stages": stages,
        "violations": findings,
        "notes": notes,
        "ok": not findings,
    }
    if rederived is not None:
        out["rederived"] = rederived
    return out
