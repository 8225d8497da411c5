"""``llmrec audit``: scan every artifact that can hold user data for forgotten records.

The audit trusts nothing it can check:

* **the ledger**: SQLite integrity, every stage of every request done;
* **discovery**: artifacts are found from the workspace's files (retrieval stores, adapter
  shards, CF checkpoints, the base LM) *and* from the ledger's registry; a store or adapter the
  registry does not know, or a registered artifact whose files are partly gone, is a violation
  (the forget stages would skip it); unregistered checkpoints are audited from their files;
* **ledger identity**: an artifact claiming a ledger version the ledger does not have, or built
  on another history (:meth:`~llmrec.data.ledger.Ledger.head`), means the ledger was lost or
  replaced;
* **content hashes** recorded when each artifact was written (:mod:`llmrec.integrity`): a
  garbled, truncated or edited file is named;
* then each artifact family's own auditor ``audit(workspace, view) -> list[finding]``
  (registered by dotted path so the scan imports only what exists), which re-derives what it can
  from the retained data. An auditor that cannot read its artifact reports that as a finding.

A finding is a dict with ``artifact`` (a name the user recognises), ``path`` and ``problem``.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from llmrec.errors import ArtifactError, LlmrecError
from llmrec.integrity import verify
from llmrec.pipelines import forget as forget_pipeline
from llmrec.workspace import Workspace

AUDITORS: dict[str, str] = {
    "retrieval": "retrieval.audit:audit",
    "adapters": "llmrec.llm.audit:audit",
    "candidate-source": "retrieval.sources:audit",
    "served-log": "llmrec.pipelines.served:audit",
    "checkpoints": "llmrec.pipelines.audit:audit_checkpoints",
}

# artifact kinds the forget stages update: a registry/file disagreement there blocks `forget`
STAGED_KINDS = ("retrieval-store", "lora-adapter")


def register_auditor(name: str, target: str) -> None:
    AUDITORS[name] = target


def _finding(artifact: str, path: Path | str, problem: str) -> dict:
    return {"artifact": artifact, "path": str(path), "problem": problem}


# ------------------------------------------------------------------------------ discovery
@dataclass(frozen=True)
class Found:
    """An artifact found on disk: its registry name, kind, path and the version it claims."""

    name: str
    kind: str
    path: Path
    claimed_version: int | None = None
    claimed_head: str | None = None


def _json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def discover(ws: Workspace) -> list[Found]:
    """Artifacts present in the workspace's ``artifacts/`` folder, whatever the ledger says."""
    art = ws.root / "artifacts"
    out: list[Found] = []
    if not art.is_dir():
        return out
    for d in sorted(p for p in art.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (d / "manifest.json").is_file() or _store_leftovers(d):
            man = _json(d / "manifest.json") or {}
            out.append(
                Found(
                    f"retrieval-store:{d.name}",
                    "retrieval-store",
                    d,
                    _int(man.get("ledger_version")),
                    man.get("ledger_head") if isinstance(man.get("ledger_head"), str) else None,
                )
            )
    adapters = art / "adapters"
    if adapters.is_dir():
        for d in sorted(adapters.glob("shard-[0-9]*")):
            if d.is_dir():
                m = _json(d / "llmrec_shard.json") or {}
                out.append(Found(f"adapter/{d.name}", "lora-adapter", d, _int(m.get("trained_at"))))
    for p in sorted((art / "models").glob("*.pt")):
        out.append(Found(f"model:{p.stem}", "checkpoint", p))
    for p in sorted((art / "unlearned").glob("*.pt")):
        model, _, method = p.stem.partition("-")
        out.append(Found(f"model:{model}:{method}", "checkpoint", p))
    if (art / "lm" / "config.json").is_file():
        out.append(Found("lm/base", "base-lm", art / "lm"))
    return out


def _store_leftovers(d: Path) -> bool:
    """A folder holding retrieval-store files (index/clusters/counts) without its manifest."""
    return any(d.glob("index.v*.faiss")) or (d / "counts.npy").is_file()


def consistency(ws: Workspace, deep: bool = True) -> tuple[list[dict], list[str]]:
    """Registry versus files versus ledger history; ``deep`` also verifies content hashes.

    Returns ``(findings, notes)``; notes are registered artifacts deleted as a whole (no data
    left behind, nothing to forget in them).
    """
    findings: list[dict] = []
    notes: list[str] = []
    found = discover(ws)
    if ws.ledger_path.exists():
        with ws.ledger() as led:
            latest = led.version
            registry = led.artifacts()
            heads = {
                v: led.head(v)
                for v in {a["ledger_version"] for a in registry}
                | {f.claimed_version for f in found if f.claimed_version is not None}
                if v <= latest
            }
    else:
        latest, registry, heads = 0, [], {0: None}
    replaced = "the ledger was lost or replaced (restore it from a backup, or rebuild the artifact)"
    by_name = {a["name"]: a for a in registry}
    for a in registry:
        path = Path(a["path"])
        name = a["name"]
        if a["ledger_version"] > latest:
            findings.append(
                _finding(
                    name,
                    path,
                    f"registered at ledger v{a['ledger_version']} but the ledger "
                    f"is at v{latest}: {replaced}",
                )
            )
        head = a["detail"].get("ledger_head")
        if head and heads.get(a["ledger_version"]) not in (None, head):
            findings.append(
                _finding(
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
            if deep:
                problems = verify(path, recorded)
            else:
                problems = [
                    f"{rel or path.name} is missing"
                    for rel in recorded
                    if not (path / rel if rel else path).is_file()
                ]
            for p in problems:
                findings.append(_finding(name, path, p))
    for f in found:
        if f.claimed_version is not None and f.claimed_version > latest:
            findings.append(
                _finding(
                    f.name,
                    f.path,
                    f"claims ledger v{f.claimed_version} but the ledger is "
                    f"at v{latest}: {replaced}",
                )
            )
        elif f.claimed_head and heads.get(f.claimed_version) not in (None, f.claimed_head):
            findings.append(
                _finding(
                    f.name,
                    f.path,
                    f"built on another ledger history than "
                    f"v{f.claimed_version} of this one: {replaced}",
                )
            )
        if f.name not in by_name and f.kind in STAGED_KINDS:
            findings.append(
                _finding(
                    f.name,
                    f.path,
                    "present in the workspace but not in the ledger's "
                    "registry (rows deleted or ledger replaced): forgets would skip it; "
                    "rebuild it",
                )
            )
    adapters = ws.root / "artifacts" / "adapters"
    shards = [f for f in found if f.kind == "lora-adapter"] or [
        a for a in registry if a["kind"] == "lora-adapter" and Path(a["path"]).exists()
    ]
    cfg = _json(adapters / "config.json")
    n_shards = _int(cfg.get("n_shards")) if cfg else None
    for f in found:
        if f.kind == "lora-adapter" and n_shards is not None:
            idx = f.path.name.removeprefix("shard-")
            if idx.isdigit() and int(idx) >= n_shards:
                findings.append(
                    _finding(
                        f.name,
                        f.path,
                        f"left over from an earlier tuning (the adapters "
                        f"have {n_shards} shards now): no forget updates it; delete it",
                    )
                )
    if shards and not (adapters / "config.json").is_file():
        findings.append(
            _finding(
                "adapters",
                adapters / "config.json",
                "adapters/config.json is missing "
                "while shard adapters exist: forgets would skip them; re-tune with "
                "'llmrec adapters tune --force'",
            )
        )
    return findings, notes


def preflight(ws: Workspace) -> None:
    """Refuse to record a request the stages could not apply to every artifact (cheap: no
    hashing). :class:`ArtifactError` with the first problem."""
    findings, _ = consistency(ws, deep=False)
    staged = [
        f
        for f in findings
        if f["artifact"].split(":")[0] in ("retrieval-store", "adapters")
        or f["artifact"].startswith("adapter/")
        or "ledger" in f["problem"]
    ]
    if staged:
        f = staged[0]
        more = f" (and {len(staged) - 1} more: see 'llmrec audit')" if len(staged) > 1 else ""
        raise ArtifactError(f"refusing to forget: {f['artifact']}: {f['problem']}{more}")


# ------------------------------------------------------------------------------ ledger
def audit_ledger(ws: Workspace) -> list[dict]:
    findings = []
    path = ws.ledger_path
    if not path.exists():
        return findings
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [_finding("ledger", path, f"cannot open: {exc}")]
    try:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            findings.append(_finding("ledger", path, f"integrity check: {ok}"))
        for stage in forget_pipeline.STAGES:
            rows = db.execute(
                "SELECT r.version FROM requests r LEFT JOIN stages s ON s.version=r.version AND s.stage=? "
                "WHERE s.status IS NULL OR s.status!='done' ORDER BY r.version",
                (stage,),
            ).fetchall()
            if rows:
                vs = [r[0] for r in rows]
                findings.append(
                    _finding(
                        f"stage:{stage}",
                        path,
                        f"requests {vs[:10]} not applied (run 'llmrec forget' to resume)",
                    )
                )
    except sqlite3.Error as exc:
        findings.append(_finding("ledger", path, f"unreadable ({exc}): restore it from a backup"))
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
    known = {Path(a["path"]).resolve() for a in arts}
    for f in discover(ws):  # unregistered checkpoints are audited too (file version only)
        if f.kind == "checkpoint" and f.path.resolve() not in known:
            arts.append({"name": f.name, "path": str(f.path), "ledger_version": None})
    for a in arts:
        if not Path(a["path"]).exists():
            continue  # deleted as a whole: nothing left to hold forgotten data
        try:
            m = load_model(a["path"])
        except Exception as exc:  # an untrusted file: torch.load may fail in any way
            findings.append(
                _finding(a["name"], a["path"], f"unreadable checkpoint ({str(exc)[:200]})")
            )
            continue
        if a["ledger_version"] is not None and m.ledger_version != a["ledger_version"]:
            findings.append(
                _finding(
                    a["name"],
                    a["path"],
                    f"file says ledger v{m.ledger_version}, registry says v{a['ledger_version']}",
                )
            )
        if m.ledger_version > view.version:
            findings.append(
                _finding(
                    a["name"],
                    a["path"],
                    f"claims ledger v{m.ledger_version} but the ledger is at v{view.version}: "
                    "the ledger was lost or replaced",
                )
            )
        elif m.ledger_version < view.version:
            findings.append(
                _finding(
                    a["name"],
                    a["path"],
                    f"stale: reflects ledger v{m.ledger_version}, ledger is at v{view.version}",
                )
            )
    return findings


def _run_auditor(name: str, target: str, ws: Workspace, view) -> list[dict]:
    mod, _, fn = target.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn)(ws, view)
    except Exception as exc:  # noqa: BLE001 - whatever breaks an auditor is a finding
        # the artifact could not even be read: that is a finding, not a crash
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return [_finding(name, ws.root / "artifacts", f"cannot be audited: {msg}")]


def run_audit(ws: Workspace) -> dict:
    """All findings plus what was scanned."""
    findings = audit_ledger(ws)
    try:
        view = ws.view()
    except (LlmrecError, sqlite3.Error, ValueError, KeyError) as exc:
        findings.append(_finding("ledger", ws.ledger_path, f"unreadable: {str(exc)[:300]}"))
        return {"ledger_version": None, "scanned": ["ledger"], "violations": findings, "ok": False}
    more, notes = consistency(ws)
    findings += more
    scanned = ["ledger", "registry"]
    for name, target in AUDITORS.items():
        findings += _run_auditor(name, target, ws, view)
        scanned.append(name)
    return {
        "ledger_version": view.version,
        "scanned": scanned,
        "violations": findings,
        "notes": notes,
        "ok": not findings,
    }
