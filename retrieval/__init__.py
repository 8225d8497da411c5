"""Forget-aware retrieval for the LLM recommendation path (CRAGRU-style).

Modules, one job each:

* :mod:`retrieval.encoders` — item text encoder (sentence-transformers) and CF encoder, plus the
  on-disk embedding cache keyed by encoder, data and ledger version;
* :mod:`retrieval.index` — FAISS index over an id map with removal, exclusion search and a
  manifest for stale detection;
* :mod:`retrieval.candidates` — the exactly unlearnable co-occurrence candidate model (integer
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

The public names below load on first use, so ``import retrieval`` stays cheap (FAISS and
torch load then).
"""

from __future__ import annotations

from typing import Any

_STORE = ("RetrievalStore",)
_CANDIDATES = ("CooccurrenceConfig", "CooccurrenceModel")
_INDEX = ("ForgetAwareIndex",)
_SOURCES = ("SOURCES", "CandidateSource", "build_source", "load_source")
_STRATEGIES = ("ALL_STRATEGIES", "STRATEGIES")
__all__ = sorted([*_STORE, *_CANDIDATES, *_INDEX, *_SOURCES, *_STRATEGIES])


def __getattr__(name: str) -> Any:
    if name in _STORE:
        from retrieval import store as mod
    elif name in _CANDIDATES:
        from retrieval import candidates as mod
    elif name in _INDEX:
        from retrieval import index as mod
    elif name in _SOURCES:
        from retrieval import sources as mod
    elif name in _STRATEGIES:
        from retrieval import strategies as mod
    else:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
    return getattr(mod, name)
