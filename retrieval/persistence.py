"""Crash-safe persistence of a :class:`~retrieval.store.RetrievalStore` (mixed into it).

Order of a save: the co-occurrence counts (in place, only the changed entries, unless a full
rewrite is due), then new files for changed artifacts (version-suffixed names), the embedding
cache entry of this version, then ``manifest.json`` atomically (the commit point, holding the
counts' checksum), then superseded files and cache entries are deleted. A lock file serialises
writers across processes; a writer that finds a newer committed version adopts it first.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from llmrec.data.ledger import Ledger
from llmrec.integrity import file_sha256, relative_to_root
from llmrec.io import atomic_path, atomic_write_json
from llmrec.locks import file_lock
from retrieval.encoders import EmbeddingCache
from retrieval.manifest import (
    COUNTS_FILE,
    FORMAT,
    STORE_KIND,
    embedding_cache_dir,
    embedding_data_key,
    encoder_key,
    manifest_path,
)


class StoreFiles:
    """The writing half of a retrieval store: lock, save, garbage collection. Expects the
    attributes :class:`~retrieval.store.RetrievalStore` sets (``ws``, ``name``, ``config``,
    ``view``, ``embeddings``, ``index``, ``cooccurrence``, ``clusters``, ``files``, ...)."""

    @property
    def root(self) -> Path:
        return manifest_path(self.ws, self.name).parent

    @property
    def ledger_version(self) -> int:
        return int(self.view.version)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Exclusive lock on the store folder: one writer at a time across processes."""
        with file_lock(self.root / ".lock"):
            yield

    def _catch_up(self) -> None:
        """Adopt the saved state if another process committed a newer version meanwhile."""
        path = manifest_path(self.ws, self.name)
        try:
            saved = json.loads(path.read_text())["ledger_version"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if int(saved) != self.ledger_version:
            fresh = type(self).load(self.ws, self.name, allow_stale=True)
            self.__dict__.update(fresh.__dict__)

    def save(self, led: Ledger | None = None) -> None:
        """Persist the store at its ledger version and register it with the ledger.

        Order: co-occurrence counts (in place, only the changed entries, unless a full
        rewrite is due), then new files for changed artifacts (version-suffixed names), the
        embedding cache entry of this version, then ``manifest.json`` atomically (the commit
        point, holding the counts' checksum), then superseded files and cache entries are
        deleted. A crash before the commit leaves the old manifest, whose checksum no longer
        matches half-updated counts: :meth:`load` then counts them again from the data.
        """
        v = self.ledger_version
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        files = dict(self.files)
        hashes = dict(self._hashes)
        self._write_counts(files)
        if "clusters" in self._dirty or "clusters" not in files:
            files["clusters"] = f"clusters.v{v}.npz"
            c = self.clusters
            with atomic_path(root / files["clusters"]) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, labels=c.labels, centroids=c.centroids)
            hashes["clusters"] = file_sha256(root / files["clusters"])
        if "index" in self._dirty or "index" not in files:
            files["index"] = f"index.v{v}.faiss"
            files["index_version"] = self.index.ledger_version
            self.index.save(root / files["index"])
            hashes["index"] = file_sha256(root / files["index"])
            hashes["index.json"] = file_sha256(root / (files["index"] + ".json"))
        files["embeddings"] = relative_to_root(self.ws.root, self._write_embeddings())
        if led is None:
            with self.ws.ledger() as own:
                ledger_head = own.head(v)
        else:
            ledger_head = led.head(v)
        man = {
            "format": FORMAT,
            "name": self.name,
            "ledger_version": v,
            "ledger_head": ledger_head,
            # content hashes taken when each file was written (the counts are covered by
            # stats.checksum, kept up to date by every in-place update), verified by load/audit
            "sha256": {
                files["clusters"]: hashes["clusters"],
                files["index"]: hashes["index"],
                files["index"] + ".json": hashes["index.json"],
            },
            "dataset": self.ws.dataset.fingerprint,
            "split": self.ws.split.config(),
            "config": self.config,
            "files": files,
            "stats": {
                "checksum": str(self.cooccurrence.checksum),
                # base64 of little-endian int64: O(n_items) in C, not a JSON list per request
                "degree_b64": base64.b64encode(
                    self.cooccurrence.degree.astype("<i8").tobytes()
                ).decode(),
            },
            "n_items_indexed": int(len(self.embeddings.ids)),
            "saved_at": time.time(),
        }
        man_path = manifest_path(self.ws, self.name)
        atomic_write_json(man_path, man)
        self.files = files
        self._hashes = hashes
        self._dirty.clear()
        self._collect_garbage()
        detail = {"name": self.name, "encoder": self.config["encoder"]}
        digest = {"manifest.json": file_sha256(man_path)}
        args = (f"{STORE_KIND}:{self.name}", STORE_KIND, root, v, detail, digest)
        if led is None:
            with self.ws.ledger() as own:
                own.register_artifact(*args)
        else:
            led.register_artifact(*args)

    def _write_counts(self, files: dict) -> None:
        counts = self.cooccurrence.counts
        path = self.root / COUNTS_FILE
        n_changed = sum(len(r) for r, _ in self._changed)
        full = "counts" in self._dirty or "counts" not in files or not path.is_file()
        if full or n_changed > counts.size // 8:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, counts)
        elif n_changed:
            # no msync: pages reach the disk with the OS's write-back; after a power loss the
            # manifest's checksum no longer matches and load() counts again from the data
            mm = np.load(path, mmap_mode="r+")
            for r, c in self._changed:
                mm[r, c] = counts[r, c]
            del mm
        self._changed.clear()
        files["counts"] = COUNTS_FILE

    def _cache(self) -> EmbeddingCache:
        return EmbeddingCache(embedding_cache_dir(self.ws, self.config))

    def _write_embeddings(self) -> Path:
        """The cache entry of this version (a hard link when the content is unchanged)."""
        cache, key, dkey = (
            self._cache(),
            encoder_key(self.config),
            embedding_data_key(self.ws, self.config),
        )
        target = cache.path(key, dkey, self.ledger_version)
        src = self.embeddings.path
        if src != target:
            if src.is_file() and "embeddings" not in self._dirty:
                tmp = target.with_name(f".{target.name}.{os.getpid()}.lnk")
                tmp.unlink(missing_ok=True)
                try:
                    os.link(src, tmp)
                except OSError:
                    tmp.write_bytes(src.read_bytes())
                os.replace(tmp, target)
            else:
                arrays = {"ids": self.embeddings.ids, "items": self.embeddings.items}
                if self.embeddings.users is not None:
                    arrays["users"] = self.embeddings.users
                cache.put(key, dkey, self.ledger_version, **arrays)
            self.embeddings.path = target
        return target

    def _collect_garbage(self) -> None:
        keep = {self.files["clusters"], self.files["index"], self.files["index"] + ".json"}
        for p in self.root.iterdir():
            if p.name.split(".v")[0] in ("clusters", "index") and p.name not in keep:
                p.unlink(missing_ok=True)
        self._cache().purge(
            encoder_key(self.config), embedding_data_key(self.ws, self.config), self.ledger_version
        )
