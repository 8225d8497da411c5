"""The ``retrieval`` forget stage: every retrieval store of the workspace (FAISS index,
co-occurrence counts, clusters, embeddings), updated incrementally from the version it reflects.

Layout: a store is a folder ``artifacts/<name>/`` holding ``manifest.json`` (its files, their
hashes and the ledger version and history it reflects), registered in the ledger as
:data:`~retrieval.manifest.STORE_KIND`. A folder holding store files without its manifest is
still found (and blocks ``llmrec forget``). The work is :mod:`retrieval.forget` and
:mod:`retrieval.audit` (whose :func:`~retrieval.audit.rederive` rebuilds each store for
``llmrec audit --deep``).
"""

from __future__ import annotations

from pathlib import Path

from llmrec.forget.registry import register_stage
from llmrec.forget.stage import Found, RederiveOptions, StageAudit, StageContext, int_or_none
from llmrec.io import read_json_object
from llmrec.workspace import Workspace
from retrieval.manifest import STORE_KIND as KIND


def _store_leftovers(d: Path) -> bool:
    """A folder holding retrieval-store files (index/clusters/counts) without its manifest."""
    return any(d.glob("index.v*.faiss")) or (d / "counts.npy").is_file()


@register_stage
class RetrievalStage:
    """Retrieval stores (index, candidate statistics, clusters, embeddings): incremental."""

    name = "retrieval"
    order = 100

    def discover(self, ws: Workspace) -> list[Found]:
        art = ws.root / "artifacts"
        if not art.is_dir():
            return []
        out = []
        for d in sorted(p for p in art.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (d / "manifest.json").is_file() or _store_leftovers(d):
                man = read_json_object(d / "manifest.json") or {}
                head = man.get("ledger_head")
                out.append(
                    Found(
                        f"{KIND}:{d.name}",
                        KIND,
                        d,
                        int_or_none(man.get("ledger_version")),
                        head if isinstance(head, str) else None,
                        staged=True,
                    )
                )
        return out

    def apply(self, ctx: StageContext) -> dict:
        from retrieval.forget import apply_stores

        return apply_stores(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        from retrieval.audit import audit
        from retrieval.forget import store_names

        names = store_names(ctx.ws, ctx.ledger)
        return StageAudit(audit(ctx, names), [f"retrieval:{n}" for n in names])

    def rederive(self, ctx: StageContext, options: RederiveOptions) -> StageAudit:
        from retrieval.audit import rederive

        return rederive(ctx)
