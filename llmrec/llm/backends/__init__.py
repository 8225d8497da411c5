"""Serving backends: how a language model is run to rank candidates (:class:`RankBackend`).

``hf`` (Hugging Face + peft, :mod:`llmrec.llm.backends.hf`) is built in; another engine is one
module with a class that keeps the :class:`RankBackend` protocol, registered with
:func:`register_backend` and checked by :mod:`llmrec.testing.backend`.
"""

from llmrec.llm.backends.base import (
    MODES,
    RANK_MODES,
    BackendSpec,
    RankBackend,
    Ranking,
    checked_rank,
    encode_prompt,
    index_labels,
)
from llmrec.llm.backends.registry import (
    DEFAULT_BACKEND,
    backend_names,
    create_backend,
    register_backend,
    unregister_backend,
)

__all__ = [
    "DEFAULT_BACKEND",
    "MODES",
    "RANK_MODES",
    "BackendSpec",
    "RankBackend",
    "Ranking",
    "backend_names",
    "checked_rank",
    "create_backend",
    "encode_prompt",
    "index_labels",
    "register_backend",
    "unregister_backend",
]
