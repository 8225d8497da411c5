"""Forget audit of the retrieval artifacts (the ``retrieval`` stage's audit,
:class:`llmrec.forget.stages.retrieval.RetrievalStage`).

For every retrieval store of the workspace, against the ledger's newest retained view:

* the manifest's ledger version is the ledger's (else the store is stale);
* no forgotten item is in the FAISS index ids, the stored embeddings or any embedding-cache
  entry on disk (older cache entries must have been purged);
* the co-occurrence statistics equal a fresh count of the retained train interactions (a
  forgotten interaction left in the counts, or a missed decrement, shows up as a difference);
* every file the manifest names has the content hash recorded when it was written, and the
  clusters label exactly the indexed items (a forgotten item's label restored is caught even
  with a matching hash);
* the manifest's ledger version and history exist in the ledger (else it was lost or replaced).

A file that cannot be read is a finding naming it, never a crash.

:func:`rederive` (``llmrec audit --deep``) goes further: it rebuilds each store's artifacts
from the retained data at the version the store claims -- a CF encoder retrained from scratch,
bypassing the embedding cache -- and compares the stored embeddings, index, clusters and
co-occurrence counts with them array for array, bytes included, so files replaced by
pre-forget ones whose hashes were rewritten are caught. Text embeddings are not re-encoded:
catalogue text holds no user data (and a re-encoding's floats may depend on the thread count).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from llmrec.data.context import StageAudit, StageContext, finding, not_rederived
from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
from llmrec.errors import ArtifactError
from llmrec.integrity import resolve_in, verify
from llmrec.workspace import Workspace
from retrieval.artifacts import Embeddings, build_index, cluster, encode, retained_rows
from retrieval.candidates import (
    CooccurrenceConfig,
    CooccurrenceModel,
    counts_checksum,
    user_rows,
)
from retrieval.encoders import EmbeddingCache
from retrieval.forget import store_names
from retrieval.index import ForgetAwareIndex
from retrieval.manifest import (
    check_ledger,
    embedding_cache_dir,
    encoder_key,
    manifest_degree,
    manifest_path,
    read_store_manifest,
)
from retrieval.threads import one_blas_thread

_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, ArtifactError)


def _forgotten_in(ids: np.ndarray, view: RetainedView) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < view.dataset.n_items)]
    return ids[view.forgotten_items[ids]]


def _tokens(view: RetainedView, idx: np.ndarray) -> str:
    return ", ".join(str(view.dataset.item_tokens[i]) for i in idx[:5])


def audit_store(
    ws: Workspace, view: RetainedView, name: str, ledger: Ledger | None = None
) -> list[dict]:
    """Findings of one store (module docstring); ``ledger``: an open ledger of ``ws``."""
    out: list[dict] = []
    art = f"retrieval:{name}"  # the store's name in findings
    man_path = manifest_path(ws, name)
    try:
        man = read_store_manifest(man_path)
    except ArtifactError as exc:
        return [finding(art, man_path, str(exc))]
    root = man_path.parent
    version = int(man["ledger_version"])
    try:
        check_ledger(ws, f"retrieval store {name!r}", version, man.get("ledger_head"), ledger)
    except ArtifactError as exc:
        out.append(finding(art, man_path, str(exc)))
    if version != view.version:
        out.append(
            finding(
                art,
                man_path,
                f"stale: reflects ledger v{man['ledger_version']}, ledger is at v{view.version}",
            )
        )
    files = man["files"]
    for problem in verify(root, man.get("sha256", {})):
        out.append(finding(art, root, problem))
    try:
        index = ForgetAwareIndex.load(root / f"{files['index']}.json")
    except _UNREADABLE as exc:
        out.append(finding(art, root / files["index"], f"unreadable index ({exc})"))
        index = None
    if index is not None:
        bad = _forgotten_in(index.ids, view)
        if len(bad):
            out.append(
                finding(
                    art,
                    root / files["index"],
                    f"index holds forgotten item(s) {_tokens(view, bad)}",
                )
            )
    emb_path = resolve_in(ws.root, files["embeddings"])
    emb = EmbeddingCache._read(emb_path)
    if emb is not None:
        bad = _forgotten_in(emb["ids"], view)
        if len(bad):
            out.append(
                finding(
                    art,
                    emb_path,
                    f"embeddings hold forgotten item(s) {_tokens(view, bad)}",
                )
            )
    cache_dir = embedding_cache_dir(ws, man["config"])
    for p in sorted(cache_dir.glob("*.npz")) if cache_dir.is_dir() else []:
        got = EmbeddingCache._read(p)
        if got is not None and len(_forgotten_in(got["ids"], view)):
            out.append(
                finding(
                    art,
                    p,
                    "embedding cache entry covers forgotten item(s) "
                    f"{_tokens(view, _forgotten_in(got['ids'], view))}",
                )
            )
    out += _audit_clusters(art, root / files["clusters"], view, index)
    if emb is not None and not out:
        out += _recluster(art, root / files["clusters"], man["config"], emb, view)
    try:
        counts = np.load(root / files["counts"], mmap_mode="r")
        fresh = CooccurrenceModel.build(
            CooccurrenceConfig.from_dict(man["config"]["generator"]),
            user_rows(view.dataset.n_items, retained_rows(ws, view)),
            view.dataset.n_users,
        )
    except _UNREADABLE as exc:
        out.append(finding(art, root / files["counts"], f"unreadable counts ({exc})"))
        return out
    if counts.shape != fresh.counts.shape or not np.array_equal(counts, fresh.counts):
        diff = (
            int(np.count_nonzero(np.asarray(counts) != fresh.counts))
            if counts.shape == fresh.counts.shape
            else -1
        )
        out.append(
            finding(
                art,
                root / files["counts"],
                f"co-occurrence counts differ from the retained data ({diff} entries): "
                "they hold forgotten interactions or missed an update",
            )
        )
    elif str(counts_checksum(np.asarray(counts))) != str(man["stats"]["checksum"]):
        out.append(finding(art, man_path, "counts checksum differs from the manifest's (edited?)"))
    try:
        degree = manifest_degree(man["stats"])
    except (ValueError, KeyError, TypeError):
        degree = None
    if degree is None or not np.array_equal(degree, fresh.degree):
        out.append(finding(art, man_path, "item degrees differ from the retained data"))
    return out


def _recluster(art: str, path: Path, config: dict, emb: dict, view: RetainedView) -> list[dict]:
    """The clusters equal a fresh k-means (seeded, one thread) of the stored embeddings."""
    fresh = cluster(config, Embeddings(emb["ids"], emb["items"], None, path), view.dataset.n_items)
    with np.load(path) as z:
        same = np.array_equal(z["labels"], fresh.labels) and np.array_equal(
            z["centroids"], fresh.centroids
        )
    if same:
        return []
    return [finding(art, path, "clusters differ from a fresh clustering of the retained items")]


def _audit_clusters(
    art: str, path: Path, view: RetainedView, index: ForgetAwareIndex | None
) -> list[dict]:
    """Clusters label the indexed (retained) items and nothing else."""
    try:
        with np.load(path) as z:
            labels, centroids = z["labels"], z["centroids"]
    except _UNREADABLE as exc:
        return [finding(art, path, f"unreadable clusters ({str(exc)[:200]})")]
    n = view.dataset.n_items
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        return [finding(art, path, f"clusters hold {labels.shape} labels for {n} items")]
    bad = np.flatnonzero(view.forgotten_items & (labels >= 0))
    out = []
    if len(bad):
        out.append(finding(art, path, f"clusters label forgotten item(s) {_tokens(view, bad)}"))
    if index is not None:
        labelled = np.flatnonzero(labels >= 0)
        if not np.array_equal(labelled, index.ids) and not len(bad):
            out.append(finding(art, path, "clusters label other items than the index holds"))
    if len(labels) and labels.max(initial=-1) >= len(centroids):
        out.append(finding(art, path, "cluster labels point past the centroids"))
    return out


def audit(ctx: StageContext, names: list[str] | None = None) -> list[dict]:
    """Findings over every retrieval store of the workspace (``names``: default, all of them)
    against ``ctx.view``."""
    ws, view, ledger = ctx.ws, ctx.view, ctx.ledger
    findings: list[dict] = []
    for name in store_names(ws, ledger) if names is None else names:
        findings += audit_store(ws, view, name, ledger)
    return findings


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Same shape, dtype and bytes (``None`` only equals ``None``)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


def rederive_store(ctx: StageContext, name: str, rep: StageAudit) -> None:
    """Rebuild store ``name`` from the retained data and compare (module docstring); adds to
    ``rep``."""
    ws = ctx.ws
    art = f"retrieval:{name}"
    man_path = manifest_path(ws, name)
    try:
        man = read_store_manifest(man_path)
        version = int(man["ledger_version"])
        config, files = man["config"], man["files"]
        root = man_path.parent
        emb_path = resolve_in(ws.root, files["embeddings"])
        stored = EmbeddingCache._read(emb_path)
        index = ForgetAwareIndex.load(root / f"{files['index']}.json")
        with np.load(root / files["clusters"]) as z:
            labels, centroids = z["labels"], z["centroids"]
        counts = np.load(root / files["counts"])
    except (*_UNREADABLE, TypeError) as exc:
        reason = f"unreadable ({str(exc)[:160]}): see the audit's findings"
        rep.not_rederived.append(not_rederived(art, man_path, reason))
        return
    if not 0 <= version <= ctx.version or stored is None:
        why = "its embeddings are missing" if stored is None else f"claims ledger v{version}"
        rep.not_rederived.append(not_rederived(art, man_path, f"{why}: see the audit's findings"))
        return
    view = ctx.view_at(version)
    rep.artifacts.append(art)
    differ = []
    if config["encoder"]["kind"] == "cf":
        fresh = encode(ws, config, view)
        if not _same(stored["ids"], fresh.ids) or not _same(stored["items"], fresh.items):
            differ.append(f"item embeddings ({emb_path.name})")
        if not _same(stored.get("users"), fresh.users):
            differ.append(f"user embeddings ({emb_path.name})")
    else:
        fresh = Embeddings(stored["ids"], stored["items"], None, emb_path)
        if not _same(stored["ids"], np.flatnonzero(~view.forgotten_items)):
            differ.append(f"embedded items ({emb_path.name})")
        rep.not_rederived.append(
            not_rederived(
                f"{art} text embeddings",
                emb_path,
                "catalogue text holds no user data: not re-encoded",
            )
        )
    rebuilt = build_index(config, fresh, version)
    if not _same(index.ids, rebuilt.ids) or not _same(index.vectors(), rebuilt.vectors()):
        differ.append(f"index ({files['index']})")
    groups = cluster(config, fresh, ws.dataset.n_items)
    if not _same(labels, groups.labels) or not _same(centroids, groups.centroids):
        differ.append(f"clusters ({files['clusters']})")
    recount = CooccurrenceModel.build(
        CooccurrenceConfig.from_dict(config["generator"]),
        user_rows(view.dataset.n_items, retained_rows(ws, view)),
        view.dataset.n_users,
    )
    if not _same(counts, recount.counts):
        differ.append(f"co-occurrence counts ({files['counts']})")
    if differ:
        rep.findings.append(
            finding(
                art,
                root,
                f"differs from a rebuild on the retained data at ledger v{version} "
                f"({encoder_key(config)}): {', '.join(differ)}; it may hold forgotten records",
            )
        )


@one_blas_thread
def rederive(ctx: StageContext, names: list[str] | None = None) -> StageAudit:
    """Every retrieval store (``names``: default, all of them) rebuilt and compared."""
    rep = StageAudit()
    for name in store_names(ctx.ws, ctx.ledger) if names is None else names:
        rederive_store(ctx, name, rep)
    return rep
