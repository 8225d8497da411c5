"""The ``retrieval`` forget stage: apply the ledger's requests to every retrieval store.

Registered in :mod:`llmrec.pipelines.forget`; ``llmrec forget`` calls :func:`apply` after recording
requests (and again on resume). Stores are found through the ledger's artifact table *and* the
workspace's files (a store whose registry row was lost is still forgotten in), so a workspace may
hold several (e.g. a text and a CF store). A workspace without a store has nothing to forget
here.
"""

from __future__ import annotations

from llmrec.workspace import Workspace
from retrieval.store import STORE_KIND, RetrievalStore


def store_names(ws: Workspace) -> list[str]:
    """Names of the retrieval stores of the workspace (registered in its ledger or found on
    disk) whose manifest exists."""
    names: set[str] = set()
    if ws.ledger_path.exists():
        with ws.ledger() as led:
            arts = [a for a in led.artifacts() if a["kind"] == STORE_KIND]
        names |= {str(a["detail"].get("name", "")) for a in arts}
    art = ws.root / "artifacts"
    if art.is_dir():
        names |= {p.parent.name for p in art.glob("*/manifest.json")}
    return sorted(n for n in names if n and RetrievalStore.manifest_path(ws, n).is_file())


def apply(ws: Workspace, version: int) -> dict:
    """Bring every retrieval store of ``ws`` to ledger ``version``; returns per-store details."""
    out = {}
    names = store_names(ws)
    if names:
        with ws.ledger() as led:
            for name in names:
                store = RetrievalStore.load(ws, name, allow_stale=True)
                out[name] = store.apply(ws, version, ledger=led)
    return {"stores": out}
