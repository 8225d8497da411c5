"""Forget audit of the retrieval artifacts (registered in :mod:`llmrec.pipelines.audit`).

For every retrieval store of the workspace, against the ledger's newest retained view:

* the manifest's ledger version is the ledger's (else the store is stale);
* no forgotten item is in the FAISS index ids, the stored embeddings or any embedding-cache
  entry on disk (older cache entries must have been purged);
* the co-occurrence statistics equal a fresh count of the retained train interactions (a
  forgotten interaction left in the counts, or a missed decrement, shows up as a difference).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmrec.data.retained import RetainedView
from llmrec.workspace import Workspace
from retrieval.candidates import CooccurrenceGenerator, GeneratorConfig, user_rows
from retrieval.encoders import EmbeddingCache
from retrieval.forget import store_names
from retrieval.index import ForgetAwareIndex
from retrieval.store import RetrievalStore, _cache_dir, _retained_rows, manifest_degree


def _finding(name: str, path: Path | str, problem: str) -> dict:
    return {"artifact": f"retrieval:{name}", "path": str(path), "problem": problem}


def _forgotten_in(ids: np.ndarray, view: RetainedView) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < view.dataset.n_items)]
    return ids[view.forgotten_items[ids]]


def _tokens(view: RetainedView, idx: np.ndarray) -> str:
    return ", ".join(str(view.dataset.item_tokens[i]) for i in idx[:5])


def audit_store(ws: Workspace, view: RetainedView, name: str) -> list[dict]:
    out: list[dict] = []
    man_path = RetrievalStore.manifest_path(ws, name)
    man = json.loads(man_path.read_text())
    root = man_path.parent
    if int(man["ledger_version"]) != view.version:
        out.append(
            _finding(
                name,
                man_path,
                f"stale: reflects ledger v{man['ledger_version']}, ledger is at v{view.version}",
            )
        )
    files = man["files"]
    index = ForgetAwareIndex.load(root / f"{files['index']}.json")
    bad = _forgotten_in(index.ids, view)
    if len(bad):
        out.append(
            _finding(
                name, root / files["index"], f"index holds forgotten item(s) {_tokens(view, bad)}"
            )
        )
    emb = EmbeddingCache._read(Path(files["embeddings"]))
    if emb is not None:
        bad = _forgotten_in(emb["ids"], view)
        if len(bad):
            out.append(
                _finding(
                    name,
                    files["embeddings"],
                    f"embeddings hold forgotten item(s) {_tokens(view, bad)}",
                )
            )
    cache_dir = _cache_dir(ws, man["config"])
    for p in sorted(cache_dir.glob("*.npz")) if cache_dir.is_dir() else []:
        got = EmbeddingCache._read(p)
        if got is not None and len(_forgotten_in(got["ids"], view)):
            out.append(
                _finding(
                    name,
                    p,
                    "embedding cache entry covers forgotten item(s) "
                    f"{_tokens(view, _forgotten_in(got['ids'], view))}",
                )
            )
    counts = np.load(root / files["counts"], mmap_mode="r")
    fresh = CooccurrenceGenerator.build(
        GeneratorConfig.from_dict(man["config"]["generator"]),
        user_rows(view.dataset.n_items, _retained_rows(ws, view)),
        view.dataset.n_users,
    )
    if counts.shape != fresh.counts.shape or not np.array_equal(counts, fresh.counts):
        diff = (
            int(np.count_nonzero(np.asarray(counts) != fresh.counts))
            if counts.shape == fresh.counts.shape
            else -1
        )
        out.append(
            _finding(
                name,
                root / files["counts"],
                f"co-occurrence counts differ from the retained data ({diff} entries): "
                "they hold forgotten interactions or missed an update",
            )
        )
    if not np.array_equal(manifest_degree(man["stats"]), fresh.degree):
        out.append(_finding(name, man_path, "item degrees differ from the retained data"))
    return out


def audit(ws: Workspace, view: RetainedView) -> list[dict]:
    """Findings over every retrieval store of ``ws``."""
    findings: list[dict] = []
    for name in store_names(ws):
        findings += audit_store(ws, view, name)
    return findings
