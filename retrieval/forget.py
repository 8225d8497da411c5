"""The ``retrieval`` forget stage's work: apply the ledger's requests to every retrieval store.

:class:`llmrec.forget.registry.RetrievalStage` calls :func:`apply_stores` with the forget
runner's open ledger and retained views. Stores are found through the ledger's artifact table
*and* the workspace's files (a store whose registry row was lost is still forgotten in), so a
workspace may hold several (e.g. a text and a CF store). A workspace without a store has
nothing to forget here.
"""

from __future__ import annotations

from collections.abc import Callable

from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
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


def apply_stores(
    ws: Workspace,
    ledger: Ledger,
    view: RetainedView,
    view_at: Callable[[int], RetainedView],
) -> dict:
    """Bring every retrieval store of ``ws`` to ``view`` (the ledger's newest retained view);
    ``view_at(v)`` gives the view at a store's own older version. Returns per-store details."""
    from retrieval.store import RetrievalStore

    out = {}
    for name in store_names(ws, ledger):
        store = RetrievalStore.load(ws, name, allow_stale=True, ledger=ledger, view_at=view_at)
        out[name] = store.apply(ws, view.version, ledger=ledger, view=view)
    return {"stores": out}
