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


def _embedding_stream(ctx, name: str, requests, views, measure) -> list[dict]:
    from llmrec.pipelines.compare_methods import _params, unlearner_classes

    cls = unlearner_classes()[name]
    unlearner = cls(seed=ctx["seed"]) if "seed" in _params(cls) else cls()
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


def _cragru_stream(ctx, name: str, requests, views, measure) -> list[dict]:
    from llmrec.pipelines.compare import Context
    from llmrec.pipelines.compare_methods import _base_lm, _build_llm_path, _serving, _sub_workspace
    from llmrec.pipelines.cragru import CragruOptions, CragruPipeline
    from llmrec.pipelines.forget import forget

    c = Context(
        ctx["ws"], ctx["base"], ctx["seed"], [], views[0], views[0], None, None, ctx["run_dir"]
    )
    adapters = name != "cragru-zeroshot"
    lm = _base_lm(c)
    sub = _sub_workspace(c, f"{name}-stream")
    t0 = time.perf_counter()
    _build_llm_path(sub, lm, ctx["seed"], adapters)
    initial = time.perf_counter() - t0
    opts = CragruOptions(model=str(lm), adapters=adapters)
    rows = []
    for j, req in enumerate(requests):
        t0 = time.perf_counter()
        forget(sub, [req])
        seconds = time.perf_counter() - t0
        row = {"seconds": seconds, "initial_seconds": initial if j == 0 else 0.0}
        rows.append({**row, **measure(_serving(CragruPipeline(sub, opts)), views[j + 1])})
    return rows


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
) -> dict:
    """Every method through the same stream of single-user requests (see module docstring)."""
    from llmrec.data.parts import part_pairs
    from llmrec.pipelines.compare import METHOD_RUNNERS, _evaluate, train_original

    ds = ws.dataset
    before = ws.view()
    users, requests, views = stream_requests(ws, before, scenario.count, seed)
    original, secs = train_original(
        ws, base, seed, before, part_pairs(ds, ws.split, TRAIN, keep=before.keep), model_overrides
    )
    log(f"seed {seed}: original {base} trained in {secs:.1f}s")
    final = views[-1]
    has_test = np.zeros(ds.n_users, dtype=bool)
    has_test[part_pairs(ds, ws.split, TEST, keep=final.keep)[0]] = True
    has_test[users] = False
    pool = np.flatnonzero(has_test & ~final.forgotten_users)
    rng = np.random.default_rng(seed + 1)
    sample = np.sort(rng.choice(pool, size=min(eval_users, len(pool)), replace=False))
    excl = None

    def measure(score_fn, view) -> dict:
        res = _evaluate(score_fn, ws, view.keep, sample, excl, k)
        return {f"ndcg@{k}": float(res[f"ndcg@{k}"]), f"recall@{k}": float(res[f"recall@{k}"])}

    ctx = {"ws": ws, "base": base, "seed": seed, "run_dir": run_dir, "original": original}
    out: dict[str, dict] = {}
    for name in methods:
        t = time.perf_counter()
        llm = METHOD_RUNNERS[name].endswith(":run_cragru")
        rows = (_cragru_stream if llm else _embedding_stream)(ctx, name, requests, views, measure)
        cum = np.cumsum([r["seconds"] for r in rows])
        for r, c in zip(rows, cum):
            r["cumulative_seconds"] = float(c)
        out[name] = {
            "family": "llm" if llm else "embedding",
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
