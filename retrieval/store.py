"""The retrieval store: every retrieval artifact of a workspace, built and forgotten together.

One store (folder ``WORKSPACE/artifacts/<name>/``, default name ``retrieval``) holds

* item embeddings from one encoder (text or CF; an entry of the embedding cache in
  ``WORKSPACE/artifacts/embeddings/``), forgotten items excluded;
* a :class:`~retrieval.index.ForgetAwareIndex` over the retained items' vectors;
* the integer statistics of the :class:`~retrieval.candidates.CooccurrenceModel`, counted on
  the retained **train** part (split part 0 and not forgotten), so that candidates can be
  evaluated on test with RecBole's protocol;
* the k-means clusters of the retained items used by the CRAGRU strategies;
* ``manifest.json``: configuration, ledger version and the current file of every artifact.

:meth:`RetrievalStore.apply` brings every artifact to a newer ledger version incrementally:
co-occurrence blocks of the affected users are replaced, forgotten items are removed from the
embeddings, the index (``remove_ids``; trained or HNSW indexes are rebuilt) and the clusters
(re-clustered only when the item set changed); a CF encoder is retrained from scratch when its
training data changed. The result equals :meth:`RetrievalStore.build` on the retained data with
the same configuration and seed, artifact for artifact.

Writes are crash-safe (:mod:`retrieval.persistence`): ``manifest.json`` is replaced atomically
last (the commit point, :mod:`retrieval.manifest`), then files it no longer references are
deleted, so no superseded artifact holding forgotten data outlives a committed apply. The
artifacts themselves are pure functions of the retained view (:mod:`retrieval.artifacts`).

Usage (the interface the generation layer codes against)::

    store = RetrievalStore.build(ws, encoder="text", n_candidates=50, seed=2020)
    store = RetrievalStore.load(ws)            # ArtifactError if missing or stale
    store.apply(ws, version)                   # what the "retrieval" forget stage runs
    store.candidates(users, n=50)              # [len(users), n] item indices, best first
    store.candidate_scores(users)              # [len(users), n_items], forgotten items -inf
    store.history(user)                        # (items, ratings): retained train history
    store.retrieve(user, "preference", H=50)   # history_items, history_ratings, candidates,
                                               # profile, ledger_version (+ user, strategy);
                                               # any of strategies.ALL_STRATEGIES (dp: ratios=)
    store.item_embeddings, store.ledger_version
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
from llmrec.data.split import TRAIN, VALID
from llmrec.errors import ArtifactError, DataError
from llmrec.integrity import file_sha256, relative_to_root, resolve_in, verify
from llmrec.io import atomic_path
from llmrec.workspace import Workspace
from retrieval import strategies as strat
from retrieval.artifacts import (
    Embeddings,
    build_index,
    cluster,
    embed,
    retained_rows,
    train_by_user,
    unit_rows,
)
from retrieval.candidates import CooccurrenceConfig, CooccurrenceModel, top_n, user_rows
from retrieval.clusters import ItemClusters
from retrieval.encoders import DEFAULT_TEXT_MODEL, CFEncoder, EmbeddingCache, TextEncoder
from retrieval.index import ForgetAwareIndex, check_factory
from retrieval.manifest import (
    DEFAULT_NAME,
    FORMAT,
    STORE_KIND,
    check_ledger,
    encoder_key,
    manifest_degree,
    manifest_path,
    read_store_manifest,
)
from retrieval.persistence import StoreFiles
from retrieval.threads import one_blas_thread

__all__ = [
    "DEFAULT_NAME",
    "FORMAT",
    "STORE_KIND",
    "RetrievalStore",
    "manifest_degree",
    "read_store_manifest",
]

DEFAULT_CF_PARAMS: dict = {}  # the CF model's own tuned recipe


class RetrievalStore(StoreFiles):
    """Retrieval artifacts of one workspace at one ledger version. Build with :meth:`build`,
    open with :meth:`load`, forget with :meth:`apply`."""

    def __init__(
        self,
        ws: Workspace,
        name: str,
        config: dict,
        view: RetainedView,
        embeddings: Embeddings,
        index: ForgetAwareIndex,
        cooccurrence: CooccurrenceModel,
        clusters: ItemClusters,
        files: dict[str, str] | None = None,
        hashes: dict[str, str] | None = None,
    ) -> None:
        self.ws = ws
        self.name = name
        self.config = config
        self.view = view
        self.embeddings = embeddings
        self.index = index
        self.cooccurrence = cooccurrence
        self.clusters = clusters
        self.files = dict(files or {})
        self._hashes: dict[str, str] = dict(hashes or {})
        self._dirty: set[str] = set()
        self._changed: list[tuple[np.ndarray, np.ndarray]] = []
        self._train_order, self._train_ptr = train_by_user(ws)
        self._rows = retained_rows(ws, view)
        self._set_vectors()
        self.build_seconds: float | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    @one_blas_thread
    def build(
        cls,
        ws: Workspace,
        encoder: str = "text",
        n_candidates: int = 50,
        seed: int = 2020,
        *,
        model: str | None = None,
        factory: str = "Flat",
        n_clusters: int = 20,
        cooccurrence: CooccurrenceConfig | None = None,
        cf_params: dict | None = None,
        cache_dir: str | Path | None = None,
        name: str = DEFAULT_NAME,
    ) -> RetrievalStore:
        """Build every artifact from scratch on the retained data at the ledger's newest
        version, save them and register the store with the ledger.

        Args:
            encoder: ``"text"`` (sentence-transformers on item text) or ``"cf"`` (embeddings
                of a CF model trained on the retained train part).
            n_candidates: default length of candidate lists.
            seed: seeds clustering, sampling strategies and the CF encoder.
            model: text model name/path (default all-MiniLM-L6-v2) or CF model (``bpr``,
                ``lightgcn``; default ``bpr``).
            factory: FAISS index-factory string (``Flat``, ``IVF64,Flat``, ``HNSW32`` …).
            n_clusters: k of the item k-means used by the strategies.
            cooccurrence: candidate-model settings (default: EASE,
                :meth:`CooccurrenceConfig.preset`; kept under the config key ``generator``).
            cf_params: CF model hyper-parameter overrides (default: the model's own recipe).
            cache_dir: embedding cache folder (default ``WORKSPACE/artifacts/embeddings``).
            name: store folder name under ``WORKSPACE/artifacts``.
        """
        if encoder == "text":
            enc = TextEncoder(model=model or DEFAULT_TEXT_MODEL)
        elif encoder == "cf":
            enc = CFEncoder(
                model=model or "bpr", seed=seed, params=dict(cf_params or DEFAULT_CF_PARAMS)
            )
        else:
            raise ValueError(f"encoder must be 'text' or 'cf', got {encoder!r}")
        if int(n_candidates) < 1 or int(n_clusters) < 1:
            raise ValueError("n_candidates and n_clusters must be positive")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise ValueError(f"store name {name!r}: use letters, digits, '_', '-', '.'")
        check_factory(factory)
        config = {
            "encoder": enc.spec(),
            "factory": factory,
            "metric": "ip",
            "n_candidates": int(n_candidates),
            "seed": int(seed),
            "n_clusters": int(n_clusters),
            "generator": (cooccurrence or CooccurrenceConfig()).to_dict(),
            "cache_dir": None if cache_dir is None else relative_to_root(ws.root, cache_dir),
        }
        t0 = time.perf_counter()
        view = ws.view()
        n_retained = int((~view.forgotten_items).sum())
        if int(n_clusters) > n_retained:
            raise ValueError(
                f"{n_clusters} clusters for {n_retained} retained items: use at most "
                f"{n_retained} (--clusters)"
            )
        emb = embed(ws, config, view)
        store = cls(
            ws,
            name,
            config,
            view,
            emb,
            build_index(config, emb, view.version),
            CooccurrenceModel.build(
                CooccurrenceConfig.from_dict(config["generator"]),
                user_rows(ws.dataset.n_items, retained_rows(ws, view)),
                ws.dataset.n_users,
            ),
            cluster(config, emb, ws.dataset.n_items),
        )
        with store._lock():
            store.save()
        store.build_seconds = time.perf_counter() - t0
        return store

    @classmethod
    def manifest_path(cls, ws: Workspace, name: str = DEFAULT_NAME) -> Path:
        return manifest_path(ws, name)

    @classmethod
    @one_blas_thread
    def load(
        cls,
        ws: Workspace,
        name: str = DEFAULT_NAME,
        allow_stale: bool = False,
        *,
        ledger: Ledger | None = None,
        view_at: Callable[[int], RetainedView] | None = None,
    ) -> RetrievalStore:
        """Open a saved store; :class:`ArtifactError` if it is missing, corrupt, built for
        another dataset/split, or stale (its ledger version is not the ledger's newest and the
        retrieval stage has not been applied) unless ``allow_stale``.

        ``ledger``: an open ledger of ``ws`` to use (default: open one); ``view_at(v)``: the
        retained view at the store's version ``v`` (default: built from the ledger)."""
        path = manifest_path(ws, name)
        if not path.is_file():
            raise ArtifactError(
                f"no retrieval store {name!r} in {ws.root}: run 'llmrec index build' first"
            )
        man = read_store_manifest(path)
        ds = ws.dataset
        if man["dataset"] != ds.fingerprint or man["split"] != ws.split.config():
            raise ArtifactError(
                f"retrieval store {name!r} was built for another dataset or split: rebuild it"
            )
        version = int(man["ledger_version"])
        what = f"retrieval store {name!r}"
        own = ledger is None and ws.ledger_path.exists()
        led = ws.ledger() if own else ledger
        try:
            check_ledger(ws, what, version, man.get("ledger_head"), led)
            if not allow_stale and led is not None:
                led.check_applied(what, version)
            if view_at is not None:
                view = view_at(version)
            elif led is not None:
                view = led.retained_view(ds, version)
            else:
                view = RetainedView.full(ds)
        finally:
            if own:
                led.close()
        config, files = man["config"], man["files"]
        root = path.parent
        problems = verify(root, man.get("sha256", {}))
        if problems:
            raise ArtifactError(
                f"retrieval store {name!r}: {problems[0]}; rebuild it with 'llmrec index build'"
            )
        emb_path = resolve_in(ws.root, files["embeddings"])
        got = EmbeddingCache._read(emb_path)
        if got is not None and np.array_equal(got["ids"], np.flatnonzero(~view.forgotten_items)):
            emb = Embeddings(got["ids"], got["items"], got.get("users"), emb_path)
        else:  # evicted by another store sharing the cache: derive it again (pure function)
            emb = embed(ws, config, view)
        index = ForgetAwareIndex.load(
            root / f"{files['index']}.json",
            ledger_version=int(files["index_version"]),
            encoder=encoder_key(config),
        )
        gcfg = CooccurrenceConfig.from_dict(config["generator"])
        stats = man["stats"]
        try:
            counts = np.load(root / files["counts"])
            with np.load(root / files["clusters"]) as z:
                clusters = ItemClusters(z["labels"], z["centroids"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ArtifactError(
                f"retrieval store {name!r}: unreadable artifact ({str(exc)[:200]}); rebuild it "
                "with 'llmrec index build'"
            ) from None
        gen = CooccurrenceModel(gcfg, counts, manifest_degree(stats))
        recounted = gen.checksum != int(stats["checksum"])
        if recounted:  # interrupted in-place update: count again from the retained data
            gen = CooccurrenceModel.build(
                gcfg, user_rows(ds.n_items, retained_rows(ws, view)), ds.n_users
            )
        if not np.array_equal(emb.ids, index.ids) or not np.array_equal(
            emb.ids, np.flatnonzero(~view.forgotten_items)
        ):
            raise ArtifactError(f"retrieval store {name!r}: artifacts disagree; rebuild it")
        recorded = man.get("sha256", {})
        hashes = {
            "clusters": recorded.get(files["clusters"]),
            "index": recorded.get(files["index"]),
            "index.json": recorded.get(files["index"] + ".json"),
        }
        if None in hashes.values():  # a store written before hashes were recorded
            hashes = {
                "clusters": file_sha256(root / files["clusters"]),
                "index": file_sha256(root / files["index"]),
                "index.json": file_sha256(root / (files["index"] + ".json")),
            }
        store = cls(ws, name, config, view, emb, index, gen, clusters, files=files, hashes=hashes)
        if recounted:  # replace the torn file now (it may hold forgotten contributions)
            with store._lock(), atomic_path(root / files["counts"]) as tmp, open(tmp, "wb") as fh:
                np.save(fh, gen.counts)
        return store

    # ------------------------------------------------------------------ forgetting
    @one_blas_thread
    def apply(
        self,
        ws: Workspace | None = None,
        version: int | None = None,
        ledger: Ledger | None = None,
        view: RetainedView | None = None,
    ) -> dict:
        """Bring every artifact to ledger ``version`` (default: newest) incrementally.

        Idempotent: a store already at (or past) ``version`` is left as it is. ``ledger``: an
        open ledger of ``ws`` to use (default: open one); ``view``: the retained view at
        ``version`` (default: the store's view extended with the ledger's entries). Returns
        what changed and the seconds taken (``seconds_in_memory`` excludes writing to disk).
        """
        ws = self.ws if ws is None else ws
        t0 = time.perf_counter()
        with self._lock(), ws.ledger() if ledger is None else nullcontext(ledger) as led:
            self._catch_up()
            target = led.version if version is None else int(version)
            if target <= self.ledger_version:
                return {"applied": False, "ledger_version": self.ledger_version}
            old = self.view
            if view is not None and view.version == target:
                new = view
            else:
                new = old.copy()
                for e in led.entries(upto=target, after=self.ledger_version):
                    new.apply(e.request, e.version)
                new.version = target
            ds = ws.dataset
            removed = new.removed_since(old)
            removed_train = removed[ws.split.part[removed] == TRAIN]
            users = np.unique(ds.inter_user[removed_train])
            new_items = np.flatnonzero(new.forgotten_items & ~old.forgotten_items)

            changed = 0
            if len(users):
                new_rows = [self._user_items(u, new.keep) for u in users]
                r, c = self.cooccurrence.update(
                    user_rows(ds.n_items, [self._rows[u] for u in users]),
                    user_rows(ds.n_items, new_rows),
                )
                self._changed.append((r, c))
                changed = len(r)
                for u, row in zip(users, new_rows):
                    self._rows[u] = row
            self.view = new

            retrained = False
            if self.config["encoder"]["kind"] == "cf" and (len(removed_train) or len(new_items)):
                self.embeddings = embed(ws, self.config, new)
                self.index = build_index(self.config, self.embeddings, target)
                self.clusters = cluster(self.config, self.embeddings, ds.n_items)
                self._dirty |= {"index", "clusters"}
                retrained = True
            elif len(new_items):
                keep = ~np.isin(self.embeddings.ids, new_items)
                self.embeddings = Embeddings(
                    self.embeddings.ids[keep], self.embeddings.items[keep], None, Path()
                )
                if self.index.removal_is_exact:
                    self.index.remove(new_items)
                    self.index.ledger_version = target
                else:
                    self.index = build_index(self.config, self.embeddings, target)
                self.clusters = cluster(self.config, self.embeddings, ds.n_items)
                self._dirty |= {"index", "clusters", "embeddings"}
            gone = new.forgotten_users & ~old.forgotten_users
            if not retrained and self.embeddings.users is not None and gone.any():
                users_vec = self.embeddings.users.copy()
                users_vec[gone] = 0.0
                self.embeddings = Embeddings(
                    self.embeddings.ids, self.embeddings.items, users_vec, Path()
                )
                self._dirty.add("embeddings")
            if retrained or len(new_items):
                self._set_vectors()
            t_mem = time.perf_counter() - t0
            self.save(led)
        return {
            "applied": True,
            "from_version": old.version,
            "ledger_version": target,
            "users_touched": int(len(users)),
            "interactions_removed": int(len(removed_train)),
            "items_removed": int(len(new_items)),
            "count_entries_changed": changed,
            "encoder_retrained": retrained,
            "seconds_in_memory": t_mem,
            "seconds": time.perf_counter() - t0,
        }

    # ------------------------------------------------------------------ persistence
    # ------------------------------------------------------------------ data access
    @property
    def n_items(self) -> int:
        return self.ws.dataset.n_items

    @property
    def item_embeddings(self) -> np.ndarray:
        """Encoder vectors ``[n_items, d]`` (float32); rows of forgotten items are zero."""
        return self._vectors

    @property
    def user_embeddings(self) -> np.ndarray | None:
        """CF encoder user vectors ``[n_users, d]`` (forgotten users zero); ``None`` for text."""
        return self.embeddings.users

    def _set_vectors(self) -> None:
        emb = self.embeddings
        full = np.zeros((self.n_items, emb.items.shape[1]), dtype=np.float32)
        full[emb.ids] = emb.items
        self._vectors = full
        self._unit_vectors = unit_rows(full)

    def _user_items(self, user: int, keep: np.ndarray) -> np.ndarray:
        idx = self._train_order[self._train_ptr[user] : self._train_ptr[user + 1]]
        return np.unique(self.ws.dataset.inter_item[idx[keep[idx]]])

    def _check_user(self, user: int) -> int:
        user = int(user)
        if not 0 <= user < self.ws.dataset.n_users:
            raise DataError(f"user index {user} out of range [0, {self.ws.dataset.n_users})")
        return user

    def history(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """Retained TRAIN interactions of ``user`` in chronological order: ``(items, ratings)``.

        A repeated item keeps its latest interaction; ratings are 1.0 without a rating field.
        """
        user = self._check_user(user)
        ds = self.ws.dataset
        idx = self._train_order[self._train_ptr[user] : self._train_ptr[user + 1]]
        idx = idx[self.view.keep[idx]]
        items = ds.inter_item[idx]
        _, last_rev = np.unique(items[::-1], return_index=True)
        pos = np.sort(len(items) - 1 - last_rev)
        idx = idx[pos]
        ratings = ds.rating[idx] if ds.rating is not None else np.ones(len(idx))
        return ds.inter_item[idx].astype(np.int64), np.asarray(ratings, dtype=np.float64)

    def profile(self, user: int) -> dict:
        """Visible (non-forgotten) attributes of ``user``."""
        return self.view.visible_attributes(self._check_user(user))

    @one_blas_thread
    def candidate_scores(self, users: np.ndarray) -> np.ndarray:
        """The candidate model's scores ``[len(users), n_items]``; forgotten items are ``-inf``."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        rows = user_rows(self.n_items, [self._rows[u] for u in users])
        vecs = self._unit_vectors if self.cooccurrence.config.text_weight else None
        s = self.cooccurrence.scores(rows, vecs)
        s[:, self.view.forgotten_items] = -np.inf
        return s

    @one_blas_thread
    def candidates(
        self, users: np.ndarray, n: int | None = None, exclude_valid: bool = False
    ) -> np.ndarray:
        """Top-``n`` candidate items ``[len(users), n]`` per user, best first.

        Never an item of the user's retained train history, never a forgotten item, and under
        the workspace policy ``suppress`` never an item of the user's forgotten interactions
        (``exclude_valid`` also drops the user's retained validation items). Rows are padded
        with ``-1`` if fewer items are rankable.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        n = self.config["n_candidates"] if n is None else int(n)
        blocked = user_rows(self.n_items, [self._rows[u] for u in users])
        if exclude_valid:
            blocked = blocked + self._valid_rows(users)
        if self.ws.policy == "suppress":
            blocked = blocked + self._suppressed_rows(users)
        return top_n(self.candidate_scores(users), n, blocked)

    def _suppressed_rows(self, users: np.ndarray) -> sp.csr_matrix:
        """Per user, the items of its forgotten interactions (policy ``suppress``)."""
        keys, n = self.view.forgotten_pairs(), self.n_items
        lo = np.searchsorted(keys, users * n)
        hi = np.searchsorted(keys, (users + 1) * n)
        return user_rows(n, [keys[a:b] % n for a, b in zip(lo, hi)])

    def _valid_rows(self, users: np.ndarray) -> sp.csr_matrix:
        ds = self.ws.dataset
        m = self.ws.split.mask(VALID, self.view.keep) & np.isin(ds.inter_user, users)
        vu, vi = ds.inter_user[m], ds.inter_item[m]
        return user_rows(self.n_items, [np.unique(vi[vu == u]) for u in users])

    @one_blas_thread
    def similar_items(
        self, items: np.ndarray, k: int = 10, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest retained items to each of ``items`` in the index (itself excluded)."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        extra = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
        q = self.index.vectors(items) if len(items) else np.zeros((0, self.index.dim))
        return self.index.search(q, k, exclude=[np.append(extra, i) for i in items])

    # ------------------------------------------------------------------ strategies
    @one_blas_thread
    def retrieve(
        self,
        user: int,
        strategy: str = "preference",
        H: int = 50,
        n_candidates: int | None = None,
        seed: int | None = None,
        ratios: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
    ) -> dict:
        """Prompt material for ``user``: at most ``H`` retained history items chosen by a
        strategy of :data:`retrieval.strategies.ALL_STRATEGIES` (chronological), their ratings,
        the candidate list and the visible profile. ``ratios``: the ``dp`` strategy's
        per-cluster shares (:func:`retrieval.strategies.knapsack_ratios`); ``candidates``:
        another source's list for the user (:mod:`retrieval.sources`; default: the store's).
        """
        user = self._check_user(user)
        if self.view.forgotten_users[user]:
            raise DataError(f"user {self.ws.dataset.user_tokens[user]!r} has been forgotten")
        strat.check(strategy, ratios)
        if int(H) < 0:
            raise ValueError(f"H must be >= 0, got {H}")
        seed = self.config["seed"] if seed is None else int(seed)
        n = self.config["n_candidates"] if n_candidates is None else int(n_candidates)
        items, ratings = self.history(user)
        cands = self.candidates(np.array([user]), n)[0] if candidates is None else candidates
        cands = np.asarray(cands, dtype=np.int64)
        cands = cands[cands >= 0][:n]
        pos = self._select(user, strategy, int(H), seed, items, ratings, cands, ratios)
        return {
            "user": user,
            "strategy": strategy,
            "history_items": items[pos],
            "history_ratings": ratings[pos],
            "candidates": cands,
            "profile": self.profile(user),
            "ledger_version": self.ledger_version,
        }

    def _select(
        self,
        user: int,
        strategy: str,
        H: int,
        seed: int,
        items: np.ndarray,
        ratings: np.ndarray,
        cands: np.ndarray,
        ratios: np.ndarray | None = None,
    ) -> np.ndarray:
        return strat.select(
            strategy,
            history_vectors=self._unit_vectors[items],
            history_clusters=self.clusters.labels[items],
            ratings=ratings,
            candidate_vectors=self._unit_vectors[cands],
            H=H,
            seed=seed,
            user=user,
            ratios=ratios,
        )

    @one_blas_thread
    def select_history(
        self,
        users: np.ndarray,
        strategies: str | tuple[str, ...] = strat.STRATEGIES,
        H: int = 50,
        seed: int | None = None,
        ratios: np.ndarray | None = None,
    ) -> dict[str, list[np.ndarray]]:
        """History items chosen for many users at once, per strategy (each user's history
        is read once, candidates are computed in one batch); forgotten users get an empty
        selection. Same results as :meth:`retrieve`."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        strategies = (strategies,) if isinstance(strategies, str) else tuple(strategies)
        for s in strategies:
            strat.check(s, ratios)
        seed = self.config["seed"] if seed is None else int(seed)
        cands = self.candidates(users) if "attention" in strategies else None
        out: dict[str, list[np.ndarray]] = {s: [] for s in strategies}
        for k, u in enumerate(users):
            items, ratings = self.history(u)
            c = cands[k][cands[k] >= 0] if cands is not None else np.zeros(0, np.int64)
            for s in strategies:
                pos = self._select(int(u), s, int(H), seed, items, ratings, c, ratios)
                out[s].append(items[pos])
        return out

    # ------------------------------------------------------------------ comparison
    @one_blas_thread
    def differences(
        self, other: RetrievalStore, users: np.ndarray | None = None, H: int = 50
    ) -> list[str]:
        """Names of the artifacts/outputs where ``other`` differs (empty: identical).

        Compares index ids and vectors, embeddings, co-occurrence statistics, clusters, the
        candidate lists of ``users`` (default: all) and every strategy's output for ``users``.
        """
        out = []
        if self.ledger_version != other.ledger_version:
            out.append("ledger_version")
        if not np.array_equal(self.index.ids, other.index.ids):
            out.append("index.ids")
        elif not np.array_equal(self.index.vectors(), other.index.vectors()):
            out.append("index.vectors")
        if not np.array_equal(self._vectors, other._vectors):
            out.append("embeddings")
        if not self.cooccurrence.equals(other.cooccurrence):
            out.append("generator.statistics")
        if not self.clusters.equals(other.clusters):
            out.append("clusters")
        users = np.arange(self.ws.dataset.n_users) if users is None else np.asarray(users)
        if not np.array_equal(self.candidates(users), other.candidates(users)):
            out.append("candidates")
        mine, theirs = self.select_history(users, H=H), other.select_history(users, H=H)
        for s in strat.STRATEGIES:
            if any(not np.array_equal(a, b) for a, b in zip(mine[s], theirs[s])):
                out.append(f"strategy.{s}")
        if any(self.profile(u) != other.profile(u) for u in users):
            out.append("profiles")
        return out

    def __repr__(self) -> str:
        return (
            f"RetrievalStore({self.name!r}, {encoder_key(self.config)}, {self.index!r}, "
            f"v{self.ledger_version})"
        )
