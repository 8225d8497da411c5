"""Training sub-models of a sharded model from scratch, in a pool of worker processes.

Training a shard always runs with ``threads`` torch threads (default 1) whether in a worker
process or in-process, so results do not depend on where it ran. Shards train in a pool of
spawned worker processes (``multiprocessing`` ``spawn`` context), kept for later requests
because starting a worker (importing torch) costs more than a small shard; a single shard, or a
pool that cannot start, trains in-process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from llmrec.models import CFModel, build_model


def train_shard(job: dict) -> dict:
    """Train one sub-model from scratch (runs in a worker process or in-process).

    ``job``: ``model``, ``n_users``, ``n_items``, ``params`` (build_model overrides, including
    ``seed``), ``users``, ``items``, ``threads``. Returns the state dict, the model's extra
    checkpoint tensors (LightGCN: its graph), its history and the training seconds.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(int(job["threads"]))
    try:
        t0 = time.perf_counter()
        model = build_model(job["model"], job["n_users"], job["n_items"], **job["params"])
        model.fit(job["users"], job["items"])
        return {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_extra": model._checkpoint_extra(),
            "history": model.history,
            "seconds": time.perf_counter() - t0,
        }
    finally:
        torch.set_num_threads(old)


def _restore(job: dict, out: dict) -> CFModel:
    model = build_model(job["model"], job["n_users"], job["n_items"], **job["params"])
    model.load_state_dict(out["state_dict"])
    model._restore_extra(out["model_extra"])
    model.history = list(out["history"])
    model.eval()
    return model


_POOLS: dict[int, ProcessPoolExecutor] = {}


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, kept for later calls (starting a worker means
    importing torch, which costs more than training a small shard)."""
    pool = _POOLS.get(workers)
    if pool is None:
        ctx = multiprocessing.get_context("spawn")
        pool = _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    return pool


def shutdown_pools() -> None:
    """Stop every kept worker pool."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=False, cancel_futures=True)


atexit.register(shutdown_pools)


def run_jobs(jobs: Sequence[dict], processes: int | None = None) -> tuple[list[CFModel], dict]:
    """Train every job; in ``processes`` spawned workers when there are at least two jobs and
    ``processes`` (default: CPU count) allows, else (or if the pool fails) in-process.
    Returns the models (job order) and ``{"processes": used, "fallback": reason or None}``."""
    n = len(jobs)
    procs = min(n, os.cpu_count() or 1) if processes is None else min(n, int(processes))
    outs: list[dict | None] = [None] * n
    info: dict[str, Any] = {"processes": 1, "fallback": None}
    if procs > 1:
        try:
            pool = worker_pool(procs)
            futures = [pool.submit(train_shard, job) for job in jobs]
            for k, fut in enumerate(futures):
                outs[k] = fut.result()
            info["processes"] = procs
        except Exception as exc:  # noqa: BLE001  (no pool here: train in-process instead;
            # an error of the training itself recurs there and is raised)
            shutdown_pools()
            info["fallback"] = f"{type(exc).__name__}: {exc}"
    for k, job in enumerate(jobs):
        if outs[k] is None:
            outs[k] = train_shard(job)
    info["shard_seconds"] = [float(o["seconds"]) for o in outs]
    return [_restore(job, out) for job, out in zip(jobs, outs)], info
