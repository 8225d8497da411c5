"""Forget-aware retrieval for the LLM recommendation path (CRAGRU-style).

Modules, one job each:

* :mod:`retrieval.encoders` — item text encoder (sentence-transformers) and CF encoder, plus the
  on-disk embedding cache keyed by encoder, data and ledger version;
* :mod:`retrieval.index` — FAISS index over an id map with removal, exclusion search and a
  manifest for stale detection;
* :mod:`retrieval.candidates` — the exactly unlearnable candidate generator (integer
  co-occurrence statistics; EASE or item-KNN on top);
* :mod:`retrieval.clusters` — deterministic k-means of item embeddings;
* :mod:`retrieval.strategies` — CRAGRU's preference / diversity / attention history selection;
* :mod:`retrieval.store` — :class:`~retrieval.store.RetrievalStore`, all of the above for one
  workspace, built, loaded and forgotten together;
* :mod:`retrieval.artifacts` — the store's artifacts as pure functions of the retained view
  (embeddings, index, clusters, per-user train rows), shared with the audit;
* :mod:`retrieval.manifest` — the store's manifest: reading, checking, its ledger claim;
* :mod:`retrieval.persistence` — the store's crash-safe writes (lock, save, garbage collection);
* :mod:`retrieval.forget` — the ``retrieval`` stage's work (:mod:`llmrec.forget.stages.retrieval`);
* :mod:`retrieval.audit` — the ``retrieval`` stage's audit.

Nothing is imported here, so ``import retrieval`` stays cheap (FAISS and torch load on use).
"""
