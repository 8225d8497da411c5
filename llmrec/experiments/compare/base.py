"""What a compared method gets (:class:`Context`) and returns (:class:`MethodOutput`), and the
evaluation helpers every part of the harness shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmrec.data.parts import RetainedData, part_pairs
from llmrec.data.requests import ForgetRequest
from llmrec.data.retained import RetainedView
from llmrec.data.split import TEST, TRAIN, VALID
from llmrec.evaluation import evaluate_ranking
from llmrec.workspace import Workspace


@dataclass
class Context:
    """Everything a method runner may use for one seed of one scenario."""

    ws: Workspace
    base: str
    seed: int
    requests: list[ForgetRequest]
    before: RetainedView
    after: RetainedView
    original: object  # the CF model trained before the request
    task: object  # llmrec.unlearning.base.UnlearnTask
    run_dir: Path
    cache: dict = field(default_factory=dict)


@dataclass
class MethodOutput:
    """A method's result: how to score users, and what it cost."""

    name: str
    family: str  # "embedding" or "llm"
    seconds: float
    peak_memory_mb: float
    score_fn: Callable[[np.ndarray], object]
    user_embeddings: np.ndarray | None = None
    model: object | None = None
    exact: bool | None = None
    info: dict = field(default_factory=dict)
    #: the method's own gold (the same method rebuilt from scratch on the retained data) and
    #: original (the same method before the request), as score functions; ``None``: for an
    #: embedding unlearner the harness's retrained / trained base CF model, for the LLM path
    #: not available (no bias against it is reported)
    gold_fn: Callable[[np.ndarray], object] | None = None
    original_fn: Callable[[np.ndarray], object] | None = None
    #: what the two references are, in words (shown in the report)
    references: dict = field(default_factory=dict)
    #: shard per user (shardGF over the method's own shards); ``None``: the default partition
    user_shards: np.ndarray | None = None
    #: bool per user: served by a part of the model the request re-fitted (collateral group)
    touched_users: np.ndarray | None = None


def pairs(ws: Workspace, keep: np.ndarray, part: int) -> tuple[np.ndarray, np.ndarray]:
    """The (users, items) of split part ``part`` among the interactions in ``keep``."""
    return part_pairs(ws.dataset, ws.split, part, keep=keep)


def evaluate_users(
    score_fn, ws: Workspace, keep: np.ndarray, users: np.ndarray, exclude_items, k: int
) -> dict:
    """Per-user test evaluation on the split part ``TEST`` of ``keep`` (train+valid masked)."""
    tr, va, te = (pairs(ws, keep, p) for p in (TRAIN, VALID, TEST))
    return evaluate_ranking(
        score_fn,
        ws.dataset.n_items,
        np.concatenate([tr[0], va[0]]),
        np.concatenate([tr[1], va[1]]),
        te[0],
        te[1],
        ks=(5, 10, 20),
        users=users,
        return_per_user=True,
        exclude_items=exclude_items,
    )


def train_original(ws, base: str, seed: int, before, train_pairs, overrides=None):
    """The base model trained on the data before the request (the embedding methods' original);
    returns it (stamped with ``before``'s ledger version) and its training seconds."""
    from llmrec.models.training import train_model

    t0 = time.perf_counter()
    data = RetainedData(
        before, train_pairs, pairs(ws, before.keep, VALID), pairs(ws, before.keep, TEST)
    )
    model = train_model(ws, base, seed=seed, data=data, **(overrides or {}))
    model.ledger_version = before.version
    return model, time.perf_counter() - t0


def valid_ndcg(score_fn, ws: Workspace, keep: np.ndarray, users: np.ndarray, excl, k: int):
    """Mean VALID NDCG@k over ``users`` (train items masked), as in early stopping."""
    tr, va = pairs(ws, keep, TRAIN), pairs(ws, keep, VALID)
    res = evaluate_ranking(
        score_fn, ws.dataset.n_items, *tr, *va, ks=(k,), users=users, exclude_items=excl
    )
    return float(res[f"ndcg@{k}"]), int(res["n_users"])
