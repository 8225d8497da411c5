"""Method runners of the comparison harness: embedding unlearners and the LLM path."""

from __future__ import annotations

import importlib
import pkgutil
import time

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.pipelines.compare import Context, MethodOutput


def unlearner_classes() -> dict[str, type]:
    """Every :class:`~llmrec.unlearning.base.Unlearner` subclass of ``llmrec.unlearning`` by name."""
    import llmrec.unlearning as pkg
    from llmrec.unlearning.base import Unlearner

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    out: dict[str, type] = {}
    todo = list(Unlearner.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not getattr(cls, "__abstractmethods__", None) and cls.name != Unlearner.name:
            out[cls.name] = cls
    return out


def run_embedding(ctx: Context, name: str) -> MethodOutput:
    """Run the unlearner ``name`` with its default settings on the context's request."""
    classes = unlearner_classes()
    if name not in classes:
        raise LlmrecError(
            f"unknown unlearning method {name!r} (known: {', '.join(sorted(classes))})"
        )
    unlearner = (
        classes[name](seed=ctx.seed) if "seed" in _params(classes[name]) else classes[name]()
    )
    data = (ctx.ws.dataset, ctx.ws.split, ctx.before)
    t0 = time.perf_counter()
    model, record = unlearner.unlearn(ctx.original, data, ctx.requests)
    wall = time.perf_counter() - t0
    emb = model.user_embeddings().detach().cpu().numpy()
    return MethodOutput(
        name=name,
        family="embedding",
        seconds=record.seconds,
        peak_memory_mb=record.peak_memory_mb,
        score_fn=model.score,
        user_embeddings=emb,
        model=model,
        info={
            "iterations": record.iterations,
            "converged": record.converged,
            "wall_seconds": wall,
            "settings": _plain(record.settings),
        },
    )


def _params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def _plain(d: dict) -> dict:
    """Settings without nested model configs (kept short for reports)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None)))}


def topk_to_scores(ranked: np.ndarray, n_items: int) -> np.ndarray:
    """Scores that reproduce ranked lists: rank r gets ``len - r``, unranked items ``-inf``."""
    scores = np.full((len(ranked), n_items), -np.inf, dtype=np.float32)
    for row, items in enumerate(ranked):
        items = items[items >= 0]
        scores[row, items] = np.arange(len(items), 0, -1, dtype=np.float32)
    return scores
