"""Request streams: ``stream:N`` single-user requests arriving one at a time.

Each request forgets every interaction of one user (seeded random order, users with training
data). Every method answers the requests in order, each time starting from its own state after
the previous one (retrain: from scratch on what remains; AltEraser/FineTune: from the previous
unlearned model; SISA/RecEraser: the sharded model, which retrains the one shard the user lives
in; CRAGRU: the ledger's forget stages on its own workspace, re-tuning one shard adapter). Per
request the method's seconds, the cumulative seconds and NDCG@10/Recall@10 of a fixed sample of
retained users (the same for every method and request) are recorded. Building a sharded model
or the LLM path before the first request is reported apart (``initial_seconds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from llmrec.data.requests import user_interactions_request
from llmrec.data.split import TEST, TRAIN
from llmrec.experiments.compare.base import evaluate_users, pairs, train_original
from llmrec.experiments.compare.embedding import embedding_stream
from llmrec.progress import phase
from llmrec.unlearning.registry import get_method
from llmrec.workspace import Workspace

#: retained users whose utility is measured after every request
STREAM_EVAL_USERS = 100


def stream_requests(ws: Workspace, view, count: int, seed: int):
    """``count`` single-user requests (users with training data, seeded order) and the views
    after each (``views[j]`` is the state before request ``j``)."""
    ds = ws.dataset
    train = ws.split.mask(TRAIN, view.keep)
    have = np.flatnonzero(np.bincount(ds.inter_user[train], minlength=ds.n_users) > 0)
    rng = np.random.default_rng(seed)
    users = rng.choice(have, size=min(count, len(have)), replace=False)
    requests = [user_interactions_request(ds, np.array([u])) for u in users]
    views = [view]
    for r in requests:
        v = views[-1].copy()
        v.apply(r)
        views.append(v)
    return users, requests, views


def run_stream_seed(
    ws: Workspace,
    scenario,
    methods: Sequence[str],
    base: str,
    seed: int,
    run_dir: Path,
    k: int = 10,
    log: Callable[[str], None] = lambda s: None,
    model_overrides: dict | None = None,
    eval_users: int = STREAM_EVAL_USERS,
    llm_base: str | None = None,
) -> dict:
    """Every method through the same stream of single-user requests (see module docstring)."""
    ds = ws.dataset
    before = ws.view()
    users, requests, views = stream_requests(ws, before, scenario.count, seed)
    original, secs = train_original(
        ws, base, seed, before, pairs(ws, before.keep, TRAIN), model_overrides
    )
    log(f"seed {seed}: original {base} trained in {secs:.1f}s")
    final = views[-1]
    has_test = np.zeros(ds.n_users, dtype=bool)
    has_test[pairs(ws, final.keep, TEST)[0]] = True
    has_test[users] = False
    pool = np.flatnonzero(has_test & ~final.forgotten_users)
    rng = np.random.default_rng(seed + 1)
    sample = np.sort(rng.choice(pool, size=min(eval_users, len(pool)), replace=False))
    excl = None

    def measure(score_fn, view) -> dict:
        res = evaluate_users(score_fn, ws, view.keep, sample, excl, k)
        return {f"ndcg@{k}": float(res[f"ndcg@{k}"]), f"recall@{k}": float(res[f"recall@{k}"])}

    ctx = {
        "ws": ws,
        "base": base,
        "seed": seed,
        "run_dir": run_dir,
        "original": original,
        "eval_users": sample,  # an LLM method tunes its served blend on their VALID part
        "llm_base": llm_base,
    }
    out: dict[str, dict] = {}
    for name in methods:
        t = time.perf_counter()
        cls = get_method(name)
        with phase(f"seed {seed}: {name}: {len(requests)} requests one at a time"):
            if cls.family == "embedding":
                rows = embedding_stream(ctx, cls, requests, views, measure)
            else:
                rows = cls.create(seed).run_stream(ctx, requests, views, measure)
        cum = np.cumsum([r["seconds"] for r in rows])
        for r, c in zip(rows, cum):
            r["cumulative_seconds"] = float(c)
        out[name] = {
            "family": cls.family,
            "requests": rows,
            "total_seconds": float(cum[-1]) if len(cum) else 0.0,
            "initial_seconds": float(sum(r["initial_seconds"] for r in rows)),
            f"final_ndcg@{k}": rows[-1][f"ndcg@{k}"] if rows else float("nan"),
        }
        log(
            f"  {name}: {len(rows)} requests in {out[name]['total_seconds']:.1f}s "
            f"(wall {time.perf_counter() - t:.1f}s)"
        )
    return {
        "seed": seed,
        "stream": True,
        "k": k,
        "stream_users": users.tolist(),
        "eval_users": sample.tolist(),
        "original_utility": measure(original.score, before),
        "methods": out,
    }
