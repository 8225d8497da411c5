"""What every registered method declares, whatever it unlearns.

A :class:`Method` is a class with a CLI ``name``, the request kinds it ``handles``, whether it is
``exact`` (equal to rebuilding the same method from scratch on the retained data) and its
``family``: ``"embedding"`` for an :class:`~llmrec.unlearning.base.Unlearner` of a trained CF
model, ``"llm"`` for the retrieval + LLM regeneration path (its class lives with the pipelines
that build it). :func:`llmrec.unlearning.registry.register_method` keeps them in one registry.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, ClassVar

from llmrec.errors import LlmrecError

#: the method families the comparison harness knows how to run
FAMILIES = ("embedding", "llm")
#: parameters counting passes over the data (a larger value would run for days)
PASSES = ("epoch", "iteration", "sweep", "steps")
MAX_PASSES = 10_000
MAX_COUNT = 10**6
MAX_RATE = 10.0  # learning rates and step sizes
MAX_NUMBER = 1e6


def check_param(method: str, key: str, value: object, default: object, annotation: str) -> None:
    """One constructor parameter against the type of its default (or its annotation when the
    default is ``None``) and a range: ``seed`` in [0, 2**32); pass counts in [1, 10^4]; other
    counts in [0, 10^6] ([1, 10^6] for sizes); rates and step sizes in (0, 10]; other numbers
    finite in [0, 10^6]. :class:`LlmrecError` naming the method, key and value."""

    def bad(why: str) -> LlmrecError:
        return LlmrecError(f"{method} parameter {key}={str(value)[:40]!r}: {why}")

    if value is None:
        if default is None or "None" in annotation:
            return
        raise bad("must not be null")
    kind = type(default).__name__ if default is not None else _kind(annotation)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("expects true or false")
        return
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise bad("expects a non-empty string")
        return
    if kind not in ("int", "float"):
        return  # an object parameter (a path or an artifact): the constructor checks it
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"expects {'an integer' if kind == 'int' else 'a number'}")
    if kind == "int" and not isinstance(value, int):
        raise bad("expects an integer")
    if not math.isfinite(value):
        raise bad("expects a finite number")
    if key == "seed":
        lo, hi = 0, 2**32 - 1
    elif kind == "int":
        passes = any(p in key for p in PASSES)
        size = passes or key in ("batch_size", "n_shards", "hidden", "q_hidden", "topk", "n_neg")
        lo, hi = (1 if size else 0), (MAX_PASSES if passes else MAX_COUNT)
    elif "lr" in key or key in ("step", "finetune_eta"):
        if not 0 < value <= MAX_RATE:
            raise bad(f"a rate must be in (0, {MAX_RATE:g}]")
        return
    else:
        lo, hi = 0.0, MAX_NUMBER
    if not lo <= value <= hi:
        raise bad(f"must be in [{lo:g}, {hi:g}]")


def _kind(annotation: str) -> str:
    """``int``, ``float``, ``bool`` or ``str`` from a ``X | None`` annotation (else ``object``)."""
    parts = {p.strip() for p in annotation.split("|")} - {"None"}
    return parts.pop() if len(parts) == 1 and parts <= {"int", "float", "bool", "str"} else "object"


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
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` if every one is a constructor parameter of the right type and in a
        meaningful range (:func:`check_param`), else :class:`LlmrecError` naming the first bad
        one: a value saved in ``workspace.json`` must never hang or break a later forget."""
        sig = inspect.signature(cls.__init__).parameters
        for key, value in params.items():
            if key not in cls.param_names():
                known = ", ".join(n for n in cls.param_names() if n != "seed") or "none"
                raise LlmrecError(f"{cls.name} has no parameter {key!r} (parameters: {known})")
            check_param(cls.name, key, value, sig[key].default, str(sig[key].annotation))
        return dict(params)

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
