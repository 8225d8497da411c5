"""The ``retrieval`` forget stage's work: apply the ledger's requests to every retrieval store.

:class:`llmrec.forget.stages.retrieval.RetrievalStage` calls :func:`apply_stores` with the
forget runner's :class:`~llmrec.data.context.StageContext` (its open ledger and retained views). Stores are found through the ledger's artifact table
*and* the workspace's files (a store whose registry row was lost is still forgotten in), so a
workspace may hold several (e.g. a text and a CF store). A workspace without a store has
nothing to forget here.
"""

from __future__ import annotations

from llmrec.data.context import StageContext
from llmrec.data.ledger import Ledger
from llmrec.workspace import Workspace
from retrieval.manifest import STORE_KIND, manifest_path


def store_names(ws: Workspace, ledger: Ledger | None = None) -> list[str]:
    """Names of the retrieval stores of the workspace (registered in ``ledger`` or found on
    disk) whose manifest exists."""
    names: set[str] = set()
    if ledger is not None:
        arts = [a for a in ledger.artifacts() if a["kind"] == STORE_KIND]
        names |= {str(a["detail"].get("name", "")) for a in arts}
    art = ws.root / "artifacts"
    if art.is_dir():
        names |= {p.parent.name for p in art.glob("*/manifest.json")}
    return sorted(n for n in names if n and manifest_path(ws, n).is_file())


def apply_stores(ctx: StageContext) -> dict:
    """Bring every retrieval store of the workspace to ``ctx.view`` (the ledger's newest
    retained view); a store at an older version is updated from ``ctx.view_at`` its own.
    Returns per-store details."""
    from retrieval.store import RetrievalStore

    ws, ledger = ctx.ws, ctx.ledger
    out = {}
    for name in store_names(ws, ledger):
        store = RetrievalStore.load(ws, name, allow_stale=True, ledger=ledger, view_at=ctx.view_at)
        out[name] = store.apply(ws, ctx.version, ledger=ledger, view=ctx.view)
    return {"stores": out}
