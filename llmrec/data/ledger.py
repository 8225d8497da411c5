"""The forget ledger: one SQLite file (WAL), the source of truth for what has been forgotten.

* Every request is stored once, keyed by its content hash; recording it again returns the same
  version. Versions come from ``AUTOINCREMENT`` so they only ever grow.
* A request and its pending stage rows are written in one transaction: a process killed while
  recording leaves either the whole entry or nothing.
* Each stage (``retrieval``, ``adapters`` ...) marks itself done per request; a restart finds the
  unfinished ones with :meth:`Ledger.pending`.
* Artifacts register the ledger version they reflect with :meth:`Ledger.register_artifact`,
  with their path relative to the workspace (the ledger's folder) and a content digest of their
  files taken at write time (:mod:`llmrec.integrity`), which ``llmrec audit`` verifies.
* :meth:`Ledger.head` is a hash chain over the requests up to a version: artifacts record it so
  that a ledger lost or replaced by another one is detected, not silently trusted.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmrec.data import snapshot
from llmrec.data.dataset import Dataset
from llmrec.data.requests import ForgetRequest
from llmrec.data.retained import RetainedView
from llmrec.errors import ArtifactError, LedgerError, LlmrecError
from llmrec.integrity import digest as content_digest
from llmrec.integrity import relative_to_root, resolve_in

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    version INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stages (
    version INTEGER NOT NULL REFERENCES requests(version),
    stage TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    updated_at REAL NOT NULL,
    detail TEXT,
    PRIMARY KEY (version, stage)
);
CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    ledger_version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    detail TEXT
);
"""

#: Added to every ledger (older ones on their first writable open): an index of the stage rows
#: not done, and :meth:`Ledger.head` recorded by writers at the versions artifacts and snapshots reflect, so a
#: reader checks them in O(1); any change to a request row (insert below, edit, delete), by this
#: code or by hand, drops the recorded heads from its version on (the triggers), so they are
#: recomputed from the rows, never trusted past an edit. The audit recomputes them all.
HEADS = (
    # the stage rows not yet done, so readers' check (Ledger.unfinished) costs what it finds
    "CREATE INDEX IF NOT EXISTS stages_open ON stages(stage, version) WHERE status != 'done'",
    "CREATE TABLE IF NOT EXISTS heads (version INTEGER PRIMARY KEY, head TEXT NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS heads_on_insert AFTER INSERT ON requests BEGIN "
    "DELETE FROM heads WHERE version >= NEW.version; END",
    "CREATE TRIGGER IF NOT EXISTS heads_on_update AFTER UPDATE ON requests BEGIN "
    "DELETE FROM heads WHERE version >= MIN(OLD.version, NEW.version); END",
    "CREATE TRIGGER IF NOT EXISTS heads_on_delete AFTER DELETE ON requests BEGIN "
    "DELETE FROM heads WHERE version >= OLD.version; END",
)
_TRIGGERS = {"heads_on_insert", "heads_on_update", "heads_on_delete"}


@dataclass(frozen=True)
class LedgerEntry:
    version: int
    request: ForgetRequest
    created_at: float


class Ledger:
    """Handle on a ledger file. Cheap to open; safe to use from several processes."""

    def __init__(self, path: str | Path, fingerprint: str | None = None, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._chain: dict[int, hashlib._Hash] = {}  # version -> chain state (:meth:`head`)
        self._recorded_heads = False
        #: use the heads writers recorded (:data:`HEADS`); the audit sets it False
        self.trust_recorded_heads = True
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            _retry_locked(self._setup, timeout)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open {explain(exc, self.path, timeout)}") from None
        if fingerprint is not None:
            self._check_fingerprint(fingerprint)

    def _setup(self) -> None:
        db = self._db
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "requests", "stages", "artifacts"} <= tables:
            with self._tx():  # a new file: create the schema under the write lock
                for statement in [*SCHEMA.split(";"), *HEADS]:
                    if statement.strip():
                        db.execute(statement)
        elif "heads" not in tables:  # a ledger written before these: add them
            try:
                with self._tx():
                    for statement in HEADS:
                        db.execute(statement)
            except sqlite3.OperationalError:
                pass  # read-only: heads are computed from the rows
        triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        self._recorded_heads = _TRIGGERS <= triggers  # without the triggers, trust none

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------- transactions
    def _tx(self):
        return _Tx(self._db)

    def _check_fingerprint(self, fingerprint: str) -> None:
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='dataset'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta(key, value) VALUES ('dataset', ?)", (fingerprint,))
            elif row[0] != fingerprint:
                raise LedgerError(
                    f"ledger {self.path} belongs to dataset {row[0]}, not {fingerprint}; "
                    "use another --workspace"
                )

    # --------------------------------------------------------------- requests
    def record(self, request: ForgetRequest, stages: Sequence[str] = ()) -> tuple[int, bool]:
        """Store ``request`` once. Returns ``(version, created)``; stages start 'pending'."""
        return self.record_many([request], stages)[0]

    def record_many(
        self, requests: Iterable[ForgetRequest], stages: Sequence[str] = ()
    ) -> list[tuple[int, bool]]:
        """Store each request once, all in one transaction (all or nothing). Returns
        ``(version, created)`` per request; a new request's stages start 'pending'."""
        now = time.time()
        out = []
        with self._tx() as db:
            for request in requests:
                row = db.execute(
                    "SELECT version FROM requests WHERE hash=?", (request.content_hash,)
                ).fetchone()
                if row is not None:
                    out.append((int(row[0]), False))
                    continue
                cur = db.execute(
                    "INSERT INTO requests(hash, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                    (request.content_hash, request.kind, request.to_json(), now),
                )
                v = int(cur.lastrowid)
                db.executemany(
                    "INSERT INTO stages(version, stage, status, updated_at) VALUES (?, ?, 'pending', ?)",
                    [(v, s, now) for s in stages],
                )
                out.append((v, True))
        return out

    @property
    def version(self) -> int:
        """The newest recorded version (0 for an empty ledger)."""
        row = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM requests").fetchone()
        return int(row[0])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def entries(self, upto: int | None = None, after: int = 0) -> list[LedgerEntry]:
        """Requests with ``after < version <= upto`` in version order."""
        upto = self.version if upto is None else upto
        rows = self._db.execute(
            "SELECT version, payload, created_at FROM requests WHERE version > ? AND version <= ? ORDER BY version",
            (after, upto),
        ).fetchall()
        out = []
        for v, p, t in rows:
            try:
                out.append(LedgerEntry(int(v), ForgetRequest.from_dict(json.loads(p)), float(t)))
            except (ValueError, TypeError, RecursionError, LlmrecError):
                raise LedgerError(
                    f"ledger {self.path}: request v{v} is corrupt; restore the ledger from a backup"
                ) from None
        return out

    def retained_view(self, ds: Dataset, version: int | None = None) -> RetainedView:
        """The dataset as it must look at ``version`` (default: newest)."""
        version = self.version if version is None else int(version)
        return self.retained_views(ds, (version,))[version]

    def retained_views(
        self, ds: Dataset, at: Iterable[int], read: list[LedgerEntry] | None = None
    ) -> dict[int, RetainedView]:
        """Views at the versions ``at``: folded on from the newest valid snapshot at or below the
        oldest of them (:mod:`llmrec.data.snapshot`) over only the entries after it (read
        and parsed here, none before it; appended to ``read`` when given). A view at the newest
        version is then saved as the snapshot (best effort: a read-only workspace just folds)."""
        at = sorted({int(v) for v in at})
        base = snapshot.latest(self, ds, at[0])
        after = base.version if base is not None else 0
        entries = self.entries(upto=at[-1], after=after)
        if read is not None:
            read.extend(entries)
        views = RetainedView.snapshots(ds, [(e.version, e.request) for e in entries], at, base)
        if entries and at[-1] == self.version:
            try:
                snapshot.save(self, views[at[-1]])
            except OSError:
                pass
        return views

    # --------------------------------------------------------------- stages
    def ensure_stage(self, stage: str) -> None:
        """Add a pending ``stage`` row to every request that lacks one (a newly added stage)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO stages(version, stage, status, updated_at) "
                "SELECT version, ?, 'pending', ? FROM requests",
                (stage, now),
            )

    def set_stage(
        self, version: int, stage: str, status: str = "done", detail: str | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO stages(version, stage, status, updated_at, detail) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(version, stage) DO UPDATE SET status=excluded.status, "
                "updated_at=excluded.updated_at, detail=excluded.detail",
                (version, stage, status, time.time(), detail),
            )

    def set_stage_upto(self, version: int, stage: str, status: str = "done") -> None:
        """Mark ``stage`` for every request up to ``version`` (an artifact rebuilt at that version)."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE stages SET status=?, updated_at=? WHERE stage=? AND version<=? "
                "AND status!=?",
                (status, now, stage, version, status),
            )

    def stages(self, version: int) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT stage, status FROM stages WHERE version=?", (version,)
        ).fetchall()
        return dict(rows)

    def unfinished(self) -> dict[str, list[int]]:
        """``{stage: versions}`` of every stage row not yet done (empty: nothing pending)."""
        rows = self._db.execute(
            "SELECT stage, version FROM stages WHERE status!='done' ORDER BY stage, version"
        ).fetchall()
        out: dict[str, list[int]] = {}
        for stage, v in rows:
            out.setdefault(stage, []).append(int(v))
        return out

    def check_applied(self, what: str, version: int | None = None) -> None:
        """Readers call this before serving: :class:`ArtifactError` (one line, saying to run
        ``llmrec forget``) if any stage of any request is unfinished, or if ``version`` (the
        artifact's) lags the newest."""
        pending = self.unfinished()
        latest = self.version
        if pending:
            stage, versions = next(iter(sorted(pending.items())))
            raise ArtifactError(
                f"{what} is stale: forget request(s) {versions[:5]} are not yet applied to stage "
                f"{stage!r}; run 'llmrec forget' to finish them"
            )
        if version is not None and version < latest:
            raise ArtifactError(
                f"{what} is stale: it reflects ledger version {version}, the ledger is at "
                f"{latest}; run 'llmrec forget' to apply the pending requests"
            )

    def head(self, version: int | None = None) -> str:
        """Hash chain over the content hashes of the requests up to ``version`` (default:
        newest), in version order: two ledgers agree up to a version iff their heads do.

        The chain is hashed on from the furthest point this handle already hashed at or below
        ``version``, so a reader asking for several heads reads each request's hash once. This
        relies on the ledger being append-only while the handle is open (versions only grow;
        a rolled-back or edited ledger is seen by the next handle: every command opens its own).
        """
        version = self.version if version is None else int(version)
        if version not in self._chain and self.trust_recorded_heads and self._recorded_heads:
            row = self._db.execute("SELECT head FROM heads WHERE version=?", (version,)).fetchone()
            if row is not None:
                return str(row[0])
        at = max((v for v in self._chain if v <= version), default=0)
        h = self._chain[at].copy() if at else hashlib.sha256(b"llmrec-ledger")
        rows = self._db.execute(
            "SELECT version, hash FROM requests WHERE version > ? AND version <= ? "
            "ORDER BY version",
            (at, version),
        )
        last = at
        for v, c in rows:
            h.update(f"{v}:{c};".encode())
            last = v
        if last == version and len(self._chain) < 64:  # not past the newest: it may still grow
            self._chain[version] = h.copy()
        return h.hexdigest()

    def record_head(self, version: int) -> None:
        """Record :meth:`head` at ``version`` (computed from the rows, or already recorded)
        for readers; best effort (a read-only or busy ledger is left as it is)."""
        version = int(version)
        if not self._recorded_heads or not 0 < version <= self.version:
            return
        head = self.head(version)
        try:
            with self._tx() as db:
                self._store_head(db, version, head)
        except sqlite3.OperationalError:
            pass

    def _store_head(self, db: sqlite3.Connection, version: int, head: str) -> None:
        """Write ``head`` as the recorded head at ``version`` inside the caller's transaction
        (nothing when this ledger has no recorded heads or the version is not recorded)."""
        if self._recorded_heads and 0 < version <= self.version:
            db.execute("INSERT OR REPLACE INTO heads(version, head) VALUES (?, ?)", (version, head))

    def recorded_head_problems(self) -> list[str]:
        """Recorded heads that differ from the heads of the rows (one pass over the chain):
        a heads table edited by hand, or rows rewritten with the triggers dropped."""
        if not self._recorded_heads:
            return []
        trust, self.trust_recorded_heads = self.trust_recorded_heads, False
        try:
            rows = self._db.execute("SELECT version, head FROM heads ORDER BY version").fetchall()
            latest = self.version
            return [
                f"the head recorded at v{v} is not the hash chain of its requests (history edited)"
                for v, h in rows
                if v > latest or self.head(int(v)) != h
            ]
        finally:
            self.trust_recorded_heads = trust

    def pending(self, stage: str) -> list[int]:
        """Versions whose ``stage`` is not done, oldest first."""
        rows = self._db.execute(
            "SELECT version FROM stages WHERE stage=? AND status!='done' ORDER BY version", (stage,)
        ).fetchall()
        return [int(r[0]) for r in rows]

    # --------------------------------------------------------------- artifacts
    @property
    def root(self) -> Path:
        """The workspace folder (the ledger's): registered paths are relative to it."""
        return self.path.parent

    def register_artifact(
        self,
        name: str,
        kind: str,
        path: str | Path,
        version: int,
        detail: dict | None = None,
        digest: dict[str, str] | None = None,
    ) -> None:
        """Record that artifact ``name`` at ``path`` reflects ledger ``version``.

        ``digest``: the content hashes of its files (default: every visible file under
        ``path``, hashed now, right after it was written); kept in ``detail["sha256"]``.
        """
        detail = dict(detail or {})
        detail["sha256"] = content_digest(path) if digest is None else dict(digest)
        detail["ledger_head"] = head = self.head(int(version))
        stored = relative_to_root(self.root, path)
        with self._tx() as db:
            self._store_head(db, int(version), head)
            db.execute(
                "INSERT INTO artifacts(name, kind, path, ledger_version, updated_at, detail) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET kind=excluded.kind, path=excluded.path, "
                "ledger_version=excluded.ledger_version, updated_at=excluded.updated_at, detail=excluded.detail",
                (name, kind, stored, int(version), time.time(), json.dumps(detail)),
            )

    def artifacts(self) -> list[dict]:
        """Registered artifacts; ``path`` is resolved against the workspace folder."""
        rows = self._db.execute(
            "SELECT name, kind, path, ledger_version, updated_at, detail FROM artifacts ORDER BY name"
        ).fetchall()
        out = []
        for n, k, p, v, t, d in rows:
            try:
                det = json.loads(d or "{}")
            except ValueError:
                det = {"unreadable": True}
            out.append(
                {
                    "name": n,
                    "kind": k,
                    "path": str(resolve_in(self.root, p)),
                    "ledger_version": int(v),
                    "updated_at": t,
                    "detail": det if isinstance(det, dict) else {"unreadable": True},
                }
            )
        return out


def explain(exc: sqlite3.Error, path: str | Path, waited: float | None = None) -> str:
    """One line naming the ledger, SQLite's complaint and what to do about it: a ledger locked
    by another process is not corrupt (restoring a backup would lose recorded requests)."""
    msg = str(exc)
    if "locked" in msg or "busy" in msg:
        after = f" after waiting {waited:g}s" if waited else ""
        return (
            f"ledger {path}: locked by another process{after}; nothing was changed: run the "
            "command again once the other llmrec command has finished"
        )
    if "full" in msg:
        return (
            f"ledger {path}: no space left on the device; nothing was changed (SQLite rolls "
            "back): free some space and run the command again"
        )
    if "readonly" in msg or "read-only" in msg:
        return f"ledger {path}: {msg}; make it (and its folder) writable"
    return (
        f"ledger {path}: {msg}; restore it from a backup (if it is lost, every artifact must be "
        "rebuilt: see 'llmrec audit')"
    )


def _retry_locked(setup, timeout: float) -> None:
    """Run ``setup``, retrying while another process holds a lock SQLite will not wait for.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked"
    at once (no busy handler) when two processes race to do it; both succeed on a retry.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return setup()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): one writer at a time, all or nothing."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
