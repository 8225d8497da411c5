"""Embedding unlearners in the comparison harness: one registered
:class:`~llmrec.unlearning.base.Unlearner` class, run with its default settings on the request."""

from __future__ import annotations

import time

import numpy as np

from llmrec.experiments.compare.base import Context, MethodOutput


def run_embedding(ctx: Context, cls: type) -> MethodOutput:
    """Run the unlearner class ``cls`` (seeded with the context's seed) on the context's request."""
    unlearner = cls.create(ctx.seed)
    data = (ctx.ws.dataset, ctx.ws.split, ctx.before)
    t0 = time.perf_counter()
    model, record = unlearner.unlearn(ctx.original, data, ctx.requests)
    wall = time.perf_counter() - t0
    emb = model.user_embeddings().detach().cpu().numpy()
    shards, touched = _shards_of(model, record.info.get("retrained_shards"))
    return MethodOutput(
        name=cls.name,
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
            "declared_exact": cls.exact,
            "settings": _plain(record.settings),
            **{k: v for k, v in record.info.items() if k in ("n_retrained", "n_shards")},
        },
        user_shards=shards,
        touched_users=touched,
    )


def embedding_stream(ctx: dict, cls: type, requests, views, measure) -> list[dict]:
    """The requests one at a time, each from the model the previous one left."""
    unlearner = cls.create(ctx["seed"])
    ws = ctx["ws"]
    model, rows = ctx["original"], []
    for j, req in enumerate(requests):
        model, rec = unlearner.unlearn(model, (ws.dataset, ws.split, views[j]), [req])
        rows.append(
            {
                "seconds": rec.seconds,
                "initial_seconds": float(rec.info.get("initial_seconds", 0.0)),
                "n_retrained": rec.info.get("n_retrained"),
                **measure(model.score, views[j + 1]),
            }
        )
    return rows


def _shards_of(model, retrained) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A user-sharded model's shard per user and the users of the shards it retrained."""
    if getattr(model, "unit", None) != "user" or getattr(model, "assignment", None) is None:
        return None, None
    shards = np.asarray(model.assignment, dtype=np.int64)
    return shards, np.isin(shards, list(retrained or []))


def _plain(d: dict) -> dict:
    """Settings without nested model configs (kept short for reports)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None)))}
