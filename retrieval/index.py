"""Forget-aware FAISS index: an id-mapped index built from an index-factory string.

* Any factory string works (``Flat``, ``IVF256,Flat``, ``IVF1024,PQ16``, ``HNSW32`` …). IVF
  indexes keep ids natively (with a hash-table direct map so ids can be removed and
  reconstructed); every other type is wrapped in ``IndexIDMap2``.
* :meth:`ForgetAwareIndex.remove` drops ids with ``remove_ids``. Index types without removal
  (HNSW) are rebuilt from their remaining vectors. :attr:`ForgetAwareIndex.removal_is_exact`
  says whether a removal leaves exactly the index a build on the remaining vectors would give:
  true for untrained, removable types (Flat, IDMap'd SQ/PQ without training is rare); false for
  trained types (IVF centroids, PQ codebooks still reflect the removed vectors) and HNSW.
  Callers that need exact unlearning rebuild those (see :mod:`retrieval.store`).
* :meth:`ForgetAwareIndex.search` excludes ids per query through ``faiss.SearchParameters``
  with an ``IDSelectorNot(IDSelectorBatch)``, so excluded items never take a result slot (index
  types whose search takes no selector, e.g. plain PQ, over-fetch and filter instead).
* :meth:`ForgetAwareIndex.save` writes the index file and a JSON manifest (ids, factory string,
  metric, encoder, ledger version); :meth:`ForgetAwareIndex.load` checks both and raises
  :class:`~llmrec.errors.ArtifactError` when the index is stale or inconsistent.

Builds are deterministic: HNSW graphs are built on one thread (parallel insertion order varies),
IVF training uses FAISS's seeded k-means.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np

from llmrec.errors import ArtifactError
from llmrec.io import atomic_path, atomic_write_json

MANIFEST_FORMAT = 1
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@contextmanager
def _single_thread(enabled: bool) -> Iterator[None]:
    """Run FAISS on one OpenMP thread (deterministic HNSW construction)."""
    if not enabled:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _reason(exc: Exception) -> str:
    """The message of a FAISS C++ exception without its source location."""
    return str(exc).strip().splitlines()[-1].rsplit(": ", 1)[-1]


def check_factory(factory: str, dim: int = 64) -> None:
    """Raise ``ValueError`` early if FAISS cannot parse ``factory`` (checked at ``dim``)."""
    if factory.upper().startswith("IDMAP"):
        raise ValueError("give the factory string without 'IDMap' (ids are handled here)")
    try:
        faiss.index_factory(dim, factory)
    except RuntimeError as exc:
        if "parse" in str(exc):
            raise ValueError(f"bad FAISS factory string {factory!r}: {_reason(exc)}") from None


class ForgetAwareIndex:
    """A FAISS index over float32 vectors with int64 ids, built from ``factory``.

    Args:
        dim: vector dimension.
        factory: ``faiss.index_factory`` string without any ``IDMap`` prefix.
        metric: ``"ip"`` (inner product; cosine on unit vectors) or ``"l2"``.
        encoder: free-form description of the encoder the vectors come from (manifest only).
        ledger_version: the forget-ledger version the indexed vectors reflect.
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        metric: str = "ip",
        encoder: str = "",
        ledger_version: int = 0,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if factory.upper().startswith("IDMAP"):
            raise ValueError("give the factory string without 'IDMap' (ids are handled here)")
        self.dim = int(dim)
        self.factory = factory
        self.metric = metric
        self.encoder = encoder
        self.ledger_version = int(ledger_version)
        self.index = self._new_index()
        self._selectors_ok = True

    # ------------------------------------------------------------------ construction
    def _new_index(self) -> faiss.Index:
        try:
            base = faiss.index_factory(self.dim, self.factory, METRICS[self.metric])
        except RuntimeError as exc:
            raise ValueError(f"bad FAISS factory string {self.factory!r}: {_reason(exc)}") from None
        ivf = faiss.try_extract_index_ivf(base)
        if ivf is not None:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            return base
        return faiss.IndexIDMap2(base)

    @property
    def native_ids(self) -> bool:
        """True for IVF indexes (ids stored in the inverted lists)."""
        return not isinstance(self.index, faiss.IndexIDMap2)

    @property
    def _inner(self) -> faiss.Index:
        return self.index if self.native_ids else faiss.downcast_index(self.index.index)

    @cached_property
    def needs_training(self) -> bool:
        """Whether the index type learns parameters from data (IVF, PQ …)."""
        return not faiss.index_factory(self.dim, self.factory, METRICS[self.metric]).is_trained

    @property
    def is_hnsw(self) -> bool:
        return isinstance(self._inner, faiss.IndexHNSW)

    @property
    def removal_is_exact(self) -> bool:
        """Whether :meth:`remove` equals a fresh build on the remaining vectors."""
        return not self.needs_training and not self.is_hnsw

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: np.ndarray,
        factory: str = "Flat",
        metric: str = "ip",
        encoder: str = "",
        ledger_version: int = 0,
        train_size: int | None = None,
        deterministic: bool = True,
    ) -> ForgetAwareIndex:
        """A new index trained (if needed) on ``vectors`` and holding them under ``ids``.

        ``train_size``: train on a seeded sample of that many vectors (large collections);
        ``deterministic=False`` lets HNSW insert on all threads (faster, graph varies by run).
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = cls(vectors.shape[1], factory, metric, encoder, ledger_version)
        index.add(vectors, ids, train_size=train_size, deterministic=deterministic)
        return index

    def add(
        self,
        vectors: np.ndarray,
        ids: np.ndarray,
        train_size: int | None = None,
        deterministic: bool = True,
    ) -> None:
        """Add vectors under ``ids`` (training the index on them, or on a seeded sample of
        ``train_size`` of them, first if it is untrained)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be [n, {self.dim}], got {vectors.shape}")
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(np.unique(ids)) != len(ids) or np.isin(ids, self.ids).any():
            raise ValueError("ids must be unique and not already in the index")
        if len(ids) == 0:
            return
        with _single_thread(self.is_hnsw and deterministic):
            if not self.index.is_trained:
                train = vectors
                if train_size is not None and train_size < len(vectors):
                    pick = np.random.default_rng(0).choice(len(vectors), train_size, replace=False)
                    train = vectors[np.sort(pick)]
                try:
                    self.index.train(train)
                except RuntimeError as exc:  # e.g. IVF4096 trained on 1,682 vectors
                    raise ValueError(
                        f"FAISS cannot train {self.factory!r} on {len(train)} vectors: "
                        f"{_reason(exc)}"
                    ) from None
            self.index.add_with_ids(vectors, ids)

    # ------------------------------------------------------------------ contents
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def ids(self) -> np.ndarray:
        """Indexed ids in ascending order."""
        if not self.native_ids:
            return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))
        inv = self._inner.invlists
        parts = [
            faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)).copy()
            for lst in range(inv.nlist)
            if inv.list_size(lst)
        ]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Stored (possibly compressed) vectors of ``ids`` (default: all, in ascending id order)."""
        ids = self.ids if ids is None else np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.index.reconstruct_batch(ids)

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Drop ``ids`` (absent ids are ignored); returns how many were removed.

        Index types without ``remove_ids`` (HNSW) are rebuilt from the vectors they keep.
        """
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        ids = ids[np.isin(ids, self.ids)]
        if len(ids) == 0:
            return 0
        if self.is_hnsw:
            keep = np.setdiff1d(self.ids, ids)
            vecs = self.vectors(keep)
            self.index = self._new_index()
            self.add(vecs, keep)
            return len(ids)
        return int(self.index.remove_ids(ids))

    # ------------------------------------------------------------------ search
    def _params(self, exclude: np.ndarray | None, nprobe: int | None, ef: int | None):
        sel = None
        if exclude is not None and len(exclude):
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
            sel = faiss.IDSelectorNot(batch)
            sel._keep = batch  # the Not selector does not own the batch
        inner = self._inner
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            return faiss.SearchParametersIVF(sel=sel, nprobe=int(nprobe or ivf.nprobe))
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=sel, efSearch=int(ef or inner.hnsw.efSearch))
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: np.ndarray | Sequence[np.ndarray] | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query; missing slots are ``(-inf|inf, -1)``.

        ``exclude``: one id array for every query, or a sequence with one array per query.
        ``nprobe`` (IVF) and ``ef_search`` (HNSW) override the search breadth.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries must be [n, {self.dim}], got {q.shape}")
        per_query = isinstance(exclude, (list, tuple))
        if per_query and len(exclude) != len(q):
            raise ValueError(f"{len(exclude)} exclusion lists for {len(q)} queries")
        if not per_query:
            return self._search(q, int(k), exclude, nprobe, ef_search)
        scores = np.empty((len(q), int(k)), np.float32)
        ids = np.empty((len(q), int(k)), np.int64)
        for r in range(len(q)):
            scores[r], ids[r] = self._search(q[r : r + 1], int(k), exclude[r], nprobe, ef_search)
        return scores, ids

    def _search(
        self,
        q: np.ndarray,
        k: int,
        exclude: np.ndarray | None,
        nprobe: int | None,
        ef: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        params = self._params(exclude, nprobe, ef)
        if params is None or params.sel is None or self._selectors_ok:
            try:
                return self.index.search(q, k, params=params)
            except RuntimeError:
                if params is None or params.sel is None:
                    raise
                self._selectors_ok = False
        # index types without selector support (e.g. PQ): fetch more, filter, keep k
        excl = np.asarray(exclude, dtype=np.int64)
        plain = self._params(None, nprobe, ef)
        scores, ids = self.index.search(q, k + len(excl), params=plain)
        out_s = np.full((len(q), k), scores.dtype.type(-np.inf), scores.dtype)
        if self.metric == "l2":
            out_s[:] = np.inf
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            ok = (ids[r] >= 0) & ~np.isin(ids[r], excl)
            n = min(k, int(ok.sum()))
            out_s[r, :n], out_i[r, :n] = scores[r][ok][:n], ids[r][ok][:n]
        return out_s, out_i

    # ------------------------------------------------------------------ persistence
    def manifest(self, index_file: str) -> dict:
        ids = self.ids
        return {
            "format": MANIFEST_FORMAT,
            "factory": self.factory,
            "metric": self.metric,
            "dim": self.dim,
            "encoder": self.encoder,
            "ledger_version": self.ledger_version,
            "ntotal": self.ntotal,
            "ids": ids.tolist(),
            "index_file": index_file,
        }

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` and its manifest to ``path`` + ``.json`` (atomically);
        returns the manifest path."""
        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        man = path.with_name(path.name + ".json")
        atomic_write_json(man, self.manifest(path.name))
        return man

    @classmethod
    def load(
        cls,
        manifest_path: str | Path,
        ledger_version: int | None = None,
        encoder: str | None = None,
    ) -> ForgetAwareIndex:
        """Load an index from its manifest; :class:`ArtifactError` if missing, corrupt or stale.

        ``ledger_version`` / ``encoder``: what the caller expects; a mismatch means the index
        does not reflect the current forget ledger (or another encoder) and must not be used.
        """
        manifest_path = Path(manifest_path)
        if not manifest_path.is_file():
            raise ArtifactError(f"index manifest not found: {manifest_path}")
        try:
            man = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{manifest_path}: unreadable index manifest ({exc})") from None
        if man.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"{manifest_path}: unknown index manifest format")
        if ledger_version is not None and man["ledger_version"] != ledger_version:
            raise ArtifactError(
                f"index {manifest_path} is stale: it reflects ledger version "
                f"{man['ledger_version']}, expected {ledger_version}"
            )
        if encoder is not None and man["encoder"] != encoder:
            raise ArtifactError(
                f"index {manifest_path} holds {man['encoder']!r} vectors, expected {encoder!r}"
            )
        file = manifest_path.with_name(man["index_file"])
        if not file.is_file():
            raise ArtifactError(f"index file missing: {file}")
        out = cls.__new__(cls)
        out.dim, out.factory, out.metric = int(man["dim"]), man["factory"], man["metric"]
        out.encoder, out.ledger_version = man["encoder"], int(man["ledger_version"])
        out._selectors_ok = True
        try:
            out.index = faiss.read_index(str(file))
        except RuntimeError as exc:
            raise ArtifactError(f"{file}: unreadable FAISS index ({exc})") from None
        if not np.array_equal(out.ids, np.asarray(man["ids"], dtype=np.int64)):
            raise ArtifactError(f"{file}: ids differ from its manifest (partial write?)")
        return out

    def __repr__(self) -> str:
        return (
            f"ForgetAwareIndex({self.factory!r}, {self.metric}, dim={self.dim}, "
            f"n={self.ntotal}, v{self.ledger_version})"
        )
