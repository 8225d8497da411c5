"""The retrieval store's artifacts as pure functions of (workspace, configuration, view).

Embeddings of the retained items (from the embedding cache when possible), the FAISS index over
them, the item clusters, and the per-user retained train rows the co-occurrence statistics are
counted on. :class:`retrieval.store.RetrievalStore` builds and updates its artifacts with these;
:mod:`retrieval.audit` recomputes them to compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmrec.data.retained import RetainedView
from llmrec.data.split import TRAIN
from llmrec.workspace import Workspace
from retrieval.clusters import ItemClusters, cluster_items
from retrieval.encoders import EmbeddingCache, TextEncoder, make_encoder
from retrieval.index import ForgetAwareIndex
from retrieval.manifest import embedding_cache_dir, embedding_data_key, encoder_key


@dataclass
class Embeddings:
    """Vectors of the retained items (``ids`` ascending) and, for CF, of the users."""

    ids: np.ndarray
    items: np.ndarray
    users: np.ndarray | None
    path: Path


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero), float64."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def train_by_user(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Train-part interaction indices grouped by user, chronological within a user."""
    ds = ws.dataset
    train = np.flatnonzero(ws.split.part == TRAIN)
    ts = ds.timestamp[train] if ds.timestamp is not None else np.zeros(len(train))
    order = train[np.lexsort((train, ts, ds.inter_user[train]))]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(ds.inter_user[train], minlength=ds.n_users))])
    return order, ptr


def retained_rows(ws: Workspace, view: RetainedView) -> list[np.ndarray]:
    """Per user, the sorted distinct items of its retained train interactions."""
    ds = ws.dataset
    m = ws.split.mask(TRAIN, view.keep)
    keys = np.unique(ds.inter_user[m] * ds.n_items + ds.inter_item[m])
    users, items = keys // ds.n_items, keys % ds.n_items
    ptr = np.searchsorted(users, np.arange(ds.n_users + 1))
    return [items[ptr[u] : ptr[u + 1]] for u in range(ds.n_users)]


def embed(ws: Workspace, config: dict, view: RetainedView) -> Embeddings:
    """Embeddings of the retained items at ``view`` (from the cache when possible)."""
    enc = make_encoder(config["encoder"])
    cache = EmbeddingCache(embedding_cache_dir(ws, config))
    key, dkey = enc.key, embedding_data_key(ws, config)
    ids = np.flatnonzero(~view.forgotten_items).astype(np.int64)
    path = cache.path(key, dkey, view.version)
    got = cache.get(key, dkey, view.version)
    if got is not None and np.array_equal(got["ids"], ids):
        return Embeddings(ids, got["items"], got.get("users"), path)
    covered = cache.find_covering(key, dkey, ids) if isinstance(enc, TextEncoder) else None
    if covered is not None:
        emb = Embeddings(ids, covered, None, path)
    else:
        emb = encode(ws, config, view)
    arrays = {"ids": emb.ids, "items": emb.items}
    if emb.users is not None:
        arrays["users"] = emb.users
    cache.put(key, dkey, view.version, **arrays)
    return Embeddings(emb.ids, emb.items, emb.users, path)


def encode(ws: Workspace, config: dict, view: RetainedView) -> Embeddings:
    """Embeddings of the retained items at ``view`` computed afresh, bypassing the cache (a
    CF encoder is trained from scratch on the retained train part); ``path`` is empty."""
    ds = ws.dataset
    enc = make_encoder(config["encoder"])
    ids = np.flatnonzero(~view.forgotten_items).astype(np.int64)
    if isinstance(enc, TextEncoder):
        return Embeddings(ids, enc.encode_catalogue(ds)[ids], None, Path())
    m = ws.split.mask(TRAIN, view.keep)
    u, i = enc.fit(ds.n_users, ds.n_items, ds.inter_user[m], ds.inter_item[m])
    u[view.forgotten_users] = 0.0
    return Embeddings(ids, i[ids], u, Path())


def build_index(config: dict, emb: Embeddings, version: int) -> ForgetAwareIndex:
    """Index of the retained items (text vectors are unit-norm: inner product = cosine)."""
    return ForgetAwareIndex.build(
        emb.items,
        emb.ids,
        config["factory"],
        config["metric"],
        encoder_key(config),
        version,
    )


def cluster(config: dict, emb: Embeddings, n_items: int) -> ItemClusters:
    """Seeded k-means of the retained items' unit vectors."""
    return cluster_items(
        unit_rows(emb.items), emb.ids, n_items, config["n_clusters"], config["seed"]
    )
