"""What every registered method declares, whatever it unlearns.

A :class:`Method` is a class with a CLI ``name``, the request kinds it ``handles``, whether it is
``exact`` (equal to rebuilding the same method from scratch on the retained data) and its
``family``: ``"embedding"`` for an :class:`~llmrec.unlearning.base.Unlearner` of a trained CF
model, ``"llm"`` for the retrieval + LLM regeneration path (its class lives with the pipelines
that build it). :func:`llmrec.unlearning.registry.register_method` keeps them in one registry.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

#: the method families the comparison harness knows how to run
FAMILIES = ("embedding", "llm")


class Method:
    """Base of every registered method: class attributes only, configured in ``__init__``."""

    name: ClassVar[str] = "method"
    #: "embedding" (cleans a CF model's embeddings) or "llm" (retrieval + LLM regeneration)
    family: ClassVar[str] = "embedding"
    #: request kinds the method can honour
    handles: ClassVar[tuple[str, ...]] = ("interactions", "user", "item")
    #: whether the result equals rebuilding the same method from scratch on the retained data
    #: (bit for bit for Retrain, by construction for shard methods and the LLM path)
    exact: ClassVar[bool] = False
    #: folder under a workspace root where a run keeps the method's reusable state (its
    #: ``cache_dir`` parameter), ``{model}`` standing for the base model; None: nothing to keep
    workspace_cache: ClassVar[str | None] = None

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The constructor's named parameters (none for a method without an ``__init__``)."""
        params = inspect.signature(cls.__init__).parameters.values()
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(p.name for p in params if p.kind in named and p.name != "self")

    @classmethod
    def workspace_defaults(cls, root: str | Path, model: str) -> dict[str, Any]:
        """Constructor parameters a run on the workspace at ``root`` gets unless the user sets
        them: the ``cache_dir`` of :attr:`workspace_cache` for base model ``model``."""
        if cls.workspace_cache is None:
            return {}
        return {"cache_dir": str(Path(root) / cls.workspace_cache.format(model=model))}

    @classmethod
    def create(cls, seed: int, **params: Any) -> Method:
        """An instance with ``params``, and ``seed`` if the constructor takes one."""
        if "seed" in cls.param_names():
            params.setdefault("seed", seed)
        return cls(**params)
