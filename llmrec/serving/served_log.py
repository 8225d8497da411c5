"""The served-recommendation log: what was shown to whom, at which ledger version.

It holds user data, so it is a forget stage like any artifact, and it is where the one meaning of
"forgotten" (docs/design.md §2.3) is checked against what was actually shown:

* a forgotten user is never served, and a forgotten item never shown: every entry holding one
  is scrubbed (the user's entries dropped, the item removed from lists);
* a forgotten *interaction* (user u, item i), under the default ``retrain`` policy: its item may
  be shown to u again exactly when a from-scratch build would. Entries served *before* the
  request (``ledger_version`` older than the request's) hold forgotten data and are scrubbed;
  entries served at or after it are legitimate and stay;
* under the workspace policy ``suppress`` (``workspace.json``: ``"forget_policy"``), i is never
  shown to u again: serving drops it (:func:`suppress_filter`, applied by the retrieval store's
  candidate lists) and every entry showing it is a violation.

:func:`scrub_log` (the ``served`` stage's work) rewrites the log atomically to that rule;
:func:`audit` reports entries breaking it. Both take the forget runner's
:class:`~llmrec.data.context.StageContext` (its retained view, which records the version
each interaction was forgotten at;
:class:`llmrec.forget.stages.served_log.ServedLogStage`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from llmrec.data.context import StageContext, finding
from llmrec.data.dataset import canonical_id
from llmrec.data.retained import RetainedView
from llmrec.errors import ArtifactError
from llmrec.io import atomic_write_text, unique_keys
from llmrec.locks import file_lock
from llmrec.workspace import Workspace

#: the log's name in findings and audits
LOG = "served-log"


def log_path(ws: Workspace) -> Path:
    return ws.artifact_path("served", "log.jsonl")


def log_served(
    ws: Workspace, user: str, items: list[str], version: int, source: str, **meta
) -> None:
    """Append one served list (dataset tokens) to the log."""
    path = log_path(ws)
    entry = {
        "time": time.time(),
        "user": canonical_id(user),
        "items": [canonical_id(i) for i in items],
        "ledger_version": int(version),
        "source": source,
        **meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_suffix(".lock")):
        rules = _rules(ws)
        if rules.view.version > int(version):  # a forget committed while this list was made
            entry = rules.scrub(entry)
        if entry is None:
            return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_log(ws: Workspace) -> list[dict]:
    """Every entry of the log; :class:`ArtifactError` naming the line if one is corrupt."""
    path = log_path(ws)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable served log ({exc}); {_FIX}") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            e = json.loads(line, object_pairs_hook=unique_keys)
        except (ValueError, RecursionError) as exc:
            why = str(exc) if str(exc).startswith("duplicate key") else "corrupt served-log line"
            raise ArtifactError(f"{path}:{n}: {why}; {_FIX}") from None
        if not _valid_entry(e):
            raise ArtifactError(
                f"{path}:{n}: served-log entry lacks user, items or ledger_version; {_FIX}"
            )
        out.append(e)
    return out


_FIX = "delete or repair that line (the log holds only what was shown; nothing else needs it)"


def _valid_entry(e: object) -> bool:
    return (
        isinstance(e, dict)
        and isinstance(e.get("user"), str)
        and isinstance(e.get("items"), list)
        and all(isinstance(i, str) for i in e["items"])
        and isinstance(e.get("ledger_version"), int)
        and not isinstance(e.get("ledger_version"), bool)
    )


class Rules:
    """What may stay in the log at one ledger version, under the workspace's policy."""

    def __init__(self, view: RetainedView, forgotten_at: dict[tuple[str, str], int], policy: str):
        ds = view.dataset
        self.view = view
        self.policy = policy
        self.users = {str(t) for t in ds.user_tokens[view.forgotten_users]}
        self.items = {str(t) for t in ds.item_tokens[view.forgotten_items]}
        self.forgotten_at = forgotten_at

    def problems(self, e: dict) -> list[str]:
        """Why entry ``e`` may not stay (empty: it is legitimate). Ids are compared in their
        canonical form, so a logged ``" 4"`` is user ``"4"``; a non-canonical id is itself a
        finding (this toolkit never writes one: the line was edited)."""
        odd = [x for x in (e["user"], *e["items"]) if canonical_id(x) != x]
        e = _canonical(e)
        if e["user"] in self.users:
            return [f"forgotten user {e['user']}"]
        bad = [f"id {x!r} not in canonical form" for x in odd[:1]]
        bad += [f"forgotten item {i}" for i in e["items"] if i in self.items]
        for i in e["items"]:
            v = self.forgotten_at.get((e["user"], i))
            if v is None:
                continue
            if self.policy == "suppress":
                bad.append(f"forgotten interaction ({e['user']}, {i}) shown under policy suppress")
            elif int(e["ledger_version"]) < v:
                bad.append(
                    f"forgotten interaction ({e['user']}, {i}) served at v{e['ledger_version']}, "
                    f"before its request v{v}"
                )
        return bad

    def keeps(self, e: dict, item: str) -> bool:
        if item in self.items:
            return False
        v = self.forgotten_at.get((e["user"], item))
        return v is None or (self.policy != "suppress" and int(e["ledger_version"]) >= v)

    def scrub(self, e: dict) -> dict | None:
        """``e`` without what may not stay (``None``: drop the whole entry); ids canonical."""
        e = _canonical(e)
        if e["user"] in self.users:
            return None
        kept = [i for i in e["items"] if self.keeps(e, i)]
        return e if len(kept) == len(e["items"]) else {**e, "items": kept}


def _canonical(e: dict) -> dict:
    """``e`` with its user and items in canonical form (``e`` itself when they already are)."""
    user, items = canonical_id(e["user"]), [canonical_id(i) for i in e["items"]]
    return e if user == e["user"] and items == e["items"] else {**e, "user": user, "items": items}


def forgotten_at(view: RetainedView) -> dict[tuple[str, str], int]:
    """``(user, item) -> version`` of the first request up to ``view.version`` forgetting that
    interaction, for pairs whose user and item both still exist (from the view's per-interaction
    versions: no ledger history is read)."""
    ds = view.dataset
    gone = view.dropped > 0
    gone &= ~view.forgotten_users[ds.inter_user] & ~view.forgotten_items[ds.inter_item]
    idx = np.flatnonzero(gone)
    idx = idx[np.argsort(view.dropped[idx], kind="stable")]
    out: dict[tuple[str, str], int] = {}
    users, items, dropped = ds.inter_user[idx], ds.inter_item[idx], view.dropped[idx]
    for u, i, v in zip(users.tolist(), items.tolist(), dropped.tolist()):
        out.setdefault((str(ds.user_tokens[u]), str(ds.item_tokens[i])), v)
    return out


def _rules(ws: Workspace) -> Rules:
    """The rules at the ledger's newest version (from its snapshot: one view read)."""
    view = ws.view()
    return Rules(view, forgotten_at(view), ws.policy)


def suppress_filter(ws: Workspace, view: RetainedView, user: int, items: np.ndarray) -> np.ndarray:
    """``items`` (internal indices) the workspace's policy lets ``user`` be shown at ``view``:
    all of them under ``retrain``; without the items of the user's forgotten interactions under
    ``suppress``. Serving calls this on every list it shows (the retrieval store does for its
    candidate lists, from which every ranking is drawn)."""
    items = np.asarray(items, dtype=np.int64)
    if ws.policy != "suppress":
        return items
    return items[~np.isin(items, view.suppressed_items(int(user)))]


def scrub_log(ctx: StageContext) -> dict:
    """Scrub the log to ``ctx.view`` under the workspace's policy (module docstring)."""
    ws, view = ctx.ws, ctx.view
    path = log_path(ws)
    if not path.is_file():
        return {"entries": 0, "scrubbed": 0}
    rules = Rules(view, forgotten_at(view), ws.policy)
    with file_lock(path.with_suffix(".lock")):
        logged = read_log(ws)
        out, scrubbed = [], 0
        for e in logged:
            kept = rules.scrub(e)
            if kept is not e:
                scrubbed += 1
            if kept is not None:
                out.append(kept)
        if scrubbed:
            atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in out))
    return {"entries": len(out), "scrubbed": scrubbed, "policy": rules.policy}


def audit(ctx: StageContext) -> list[dict]:
    """Findings for every served entry that shows what the policy forbids at ``ctx.view``."""
    ws, view = ctx.ws, ctx.view
    path = log_path(ws)
    try:
        logged = read_log(ws)
    except ArtifactError as exc:
        return [finding(LOG, path, str(exc))]
    rules = Rules(view, forgotten_at(view), ws.policy)
    findings = []
    for n, e in enumerate(logged, start=1):
        if int(e["ledger_version"]) > view.version:
            findings.append(
                finding(
                    LOG,
                    path,
                    f"entry {n} was served at ledger v{e['ledger_version']} but the "
                    f"ledger is at v{view.version}: the ledger was lost or replaced",
                )
            )
            continue
        bad = rules.problems(e)
        if bad:
            findings.append(finding(LOG, path, f"entry {n}: " + "; ".join(bad[:3])))
    return findings
