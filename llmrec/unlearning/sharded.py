"""Shard-based exact unlearning: SISA (Bourtoule et al., S&P 2021) and RecEraser (Chen et al.,
"Recommendation Unlearning", WWW 2022).

The training pairs are split into ``n_shards`` disjoint shards by a fixed partition of users,
items or interactions (:mod:`llmrec.data.partition`); one sub-model (BPR-MF or LightGCN,
built by :func:`~llmrec.models.build_model` with the base model's hyper-parameters and the seed
``seed + 1 + shard``) is trained from scratch on each shard, in parallel processes. A request
retrains from scratch exactly the shards whose data it removes, on their retained pairs; every
other shard is kept as it is (byte-identical parameters). Because a shard is trained only from
its seed and its data (in a fixed order: the order of the training pairs), the retrained shard is
the shard a from-scratch build on the retained data produces: the unlearning is exact.

Sub-model recipe: the base model's hyper-parameters, except that with ``matched_steps`` (default)
the batch size of a shard is chosen so that it makes as many optimiser steps per epoch as the
base model does on the whole training data (``steps_per_epoch``, fixed at build time; the batch
size of a shard is then a function of its own data only, so exactness is kept). With the base
batch size a shard of a tenth of the data would make a tenth of the steps.

With a *user* partition a sub-model's user table holds only the users of its shard (compact
tables: a shard costs its share of the users, not a full model), and a shard that does not hold
a user knows nothing of it: its score (and user embedding) for that user is 0, its attention
weight 0.

Aggregation:

* ``mean`` (SISA): the score is the average of the shards' scores (for a user partition, the
  user's own shard's score divided by ``S``). Equivalently, the final embeddings are the
  concatenations ``[U_1 .. U_S] / S`` and ``[I_1 .. I_S]``.
* ``attention`` (RecEraser's adaptive aggregation): per side (users, items) every shard
  embedding is mapped by its own transfer matrix (``W_s e``, initialised to the identity; no
  additive bias, so a user without data in any shard keeps no preference, as in the base
  models) into a common space, and the aggregate is the attention-weighted sum
  ``sum_s a_s h_s`` with ``a = softmax_s(v . tanh(A h_s + c))`` over the shards holding the
  row; the score is the dot product of the aggregates. The aggregator is trained with the BPR
  loss on all retained training pairs, the sub-models frozen. Simplifications against the paper:
  a fixed number of epochs (no validation), uniform negatives, a plain dot-product prediction
  layer, and the aggregator is retrained from its seeded initialisation after every request (it
  is trained on every shard's data, so it must be; it is small and cheap), which keeps the
  exactness: the aggregator after a request equals one trained from scratch on the retained
  data over the same shards.

The partition itself is fixed when the sharded model is built (as in both papers): with
``partition="kmeans"`` it was computed from embeddings of a model trained on the data of that
time, which a strict reading of exact unlearning must accept or avoid (``partition="random"``
depends on the seed only).

Training a shard always runs with ``threads`` torch threads (default 1) whether in a worker
process or in-process, so results do not depend on where it ran. Shards train in a pool of
spawned worker processes (``multiprocessing`` ``spawn`` context), kept for later requests
because starting a worker (importing torch) costs more than a small shard; a single shard, or a
pool that cannot start, trains in-process.
"""

from __future__ import annotations

import abc
import atexit
import hashlib
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmrec.data.partition import UNITS, balanced_kmeans, random_partition
from llmrec.io import atomic_save
from llmrec.models import CFModel, NegativeSampler, build_model
from llmrec.unlearning.base import Monitor, Pairs, Unlearner, UnlearnTask, hyper_parameters
from llmrec.unlearning.unlearnrec import model_fingerprint, off_clock
from llmrec.unlearning.unlearnrec import pairs_hash as train_hash

SHARDED_FORMAT = 1


def pairs_hash(users: np.ndarray, items: np.ndarray) -> str:
    """SHA-256 of a shard's pairs (int64, in order)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(users, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(items, dtype=np.int64).tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ shard training


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


# ------------------------------------------------------------------------------ aggregation


class _SideAttention(nn.Module):
    """Transfer matrices per shard plus attention over the shards, for one side."""

    def __init__(self, n_shards: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.transfer = nn.Parameter(torch.eye(dim).repeat(n_shards, 1, 1))
        self.att = nn.Linear(dim, hidden)
        self.att_out = nn.Linear(hidden, 1, bias=False)

    def forward(
        self, emb: torch.Tensor, member: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``emb``: ``[n, S, d]`` shard embeddings (``member``: ``[n, S]`` bool, the shards that
        hold the row) -> aggregate ``[n, d]`` and attention weights ``[n, S]``."""
        if member is not None and bool((member.sum(1) == 1).all()):
            # one shard per row (user partitions): the attention weight is 1 on it
            own = member.to(torch.int8).argmax(1)
            own_emb = emb[torch.arange(emb.shape[0]), own]
            h = torch.bmm(own_emb.unsqueeze(1), self.transfer[own]).squeeze(1)
            return h, member.to(emb.dtype)
        h = torch.einsum("nsd,sde->nse", emb, self.transfer)
        logits = self.att_out(torch.tanh(self.att(h))).squeeze(-1)
        if member is not None:
            logits = logits.masked_fill(~member, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return (weights.unsqueeze(-1) * h).sum(1), weights


class AttentionAggregator(nn.Module):
    """RecEraser's adaptive aggregation (module docstring) for users and items."""

    def __init__(self, n_shards: int, dim: int, hidden: int = 64, seed: int = 2020) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.user = _SideAttention(n_shards, dim, hidden)
            self.item = _SideAttention(n_shards, dim, hidden)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, member: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user(users, member)[0], self.item(items)[0]


def train_aggregator(
    agg: AttentionAggregator,
    users_emb: torch.Tensor,
    items_emb: torch.Tensor,
    train: Pairs,
    epochs: int,
    lr: float,
    batch_size: int,
    n_neg: int,
    reg: float,
    seed: int,
    member: torch.Tensor | None = None,
    dense_limit: int = 1 << 23,
) -> list[dict]:
    """BPR training of the aggregator on ``train`` with frozen shard embeddings ``[n, S, d]``
    (``member``: which shards hold each user, for user partitions)."""
    n_users, n_items = users_emb.shape[0], items_emb.shape[0]
    u = torch.as_tensor(np.asarray(train[0]), dtype=torch.int64)
    i = torch.as_tensor(np.asarray(train[1]), dtype=torch.int64)
    sampler = NegativeSampler(n_users, n_items, u, i)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(agg.parameters(), lr=lr)
    dense = n_users * n_items <= dense_limit
    history = []
    agg.train()
    for epoch in range(1, int(epochs) + 1):
        perm = torch.randperm(u.numel(), generator=gen)
        eu, ei = u[perm], i[perm]
        en = sampler.sample(eu, n_neg, gen)
        total = 0.0
        for s in range(0, u.numel(), batch_size):
            bu, bi, bn = eu[s : s + batch_size], ei[s : s + batch_size], en[s : s + batch_size]
            pu, qi = agg(users_emb, items_emb, member)
            if dense:  # one GEMM and 1-d gathers: far faster on CPU than row gathers
                flat = (pu @ qi.T).reshape(-1)
                pos = flat[bu * n_items + bi].unsqueeze(1)
                neg = flat[(bu.unsqueeze(1) * n_items + bn).reshape(-1)].view(bn.shape)
            else:
                pos = (pu[bu] * qi[bi]).sum(-1, keepdim=True)
                neg = (pu[bu].unsqueeze(1) * qi[bn]).sum(-1)
            loss = -F.logsigmoid(pos - neg).mean()
            if reg > 0:
                loss = loss + reg * sum(p.pow(2).sum() for p in agg.parameters())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * bu.numel()
        history.append({"epoch": epoch, "loss": total / max(u.numel(), 1)})
    agg.eval()
    return history


# ------------------------------------------------------------------------------ the model


class ShardedModel(nn.Module):
    """Sub-models over a fixed partition plus an aggregation; scores like a :class:`CFModel`.

    ``unit``: what the partition assigns (``user``, ``item`` or ``interaction``);
    ``assignment``: the shard per user / per item, or for interactions the shard per entry of
    the sorted ``pair_keys`` (``user * n_items + item``).
    """

    model_name: ClassVar[str] = "sharded"

    def __init__(
        self,
        base: str,
        n_users: int,
        n_items: int,
        params: dict[str, Any],
        unit: str,
        assignment: np.ndarray,
        n_shards: int,
        aggregation: str = "mean",
        pair_keys: np.ndarray | None = None,
        partition: str = "random",
        seed: int = 2020,
        threads: int = 1,
        agg_settings: dict[str, Any] | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        if aggregation not in ("mean", "attention"):
            raise ValueError(f"aggregation must be 'mean' or 'attention', got {aggregation!r}")
        if unit == "interaction" and pair_keys is None:
            raise ValueError("an interaction partition needs the pair keys it assigns")
        self.base = base
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.params = {k: v for k, v in params.items() if k != "seed"}
        self.unit = unit
        self.assignment = np.asarray(assignment, dtype=np.int64)
        self.pair_keys = None if pair_keys is None else np.asarray(pair_keys, dtype=np.int64)
        self.n_shards = int(n_shards)
        self.aggregation = aggregation
        self.partition = partition
        self.seed = int(seed)
        self.threads = int(threads)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        defaults = {"hidden": 64, "epochs": 10, "lr": 0.02, "batch_size": 32768, "n_neg": 4}
        self.agg_settings = {**defaults, "reg": 1e-6, **(agg_settings or {})}
        # a user partition gives each sub-model only its own users (compact tables)
        self.members: list[np.ndarray] | None = None
        self.local: np.ndarray | None = None
        if unit == "user":
            self.members = [np.flatnonzero(self.assignment == k) for k in range(self.n_shards)]
            self.local = np.zeros(self.n_users, dtype=np.int64)
            for m in self.members:
                self.local[m] = np.arange(len(m))
            if any(len(m) == 0 for m in self.members):
                raise ValueError("every shard of a user partition needs at least one user")
        self.shards = nn.ModuleList()
        self.shard_hashes: list[str] = []
        self.shard_sizes: list[int] = []
        self.aggregator: AttentionAggregator | None = None
        self.history: list[dict] = []
        self.ledger_version: int | None = None
        self.extra: dict[str, Any] = {}

    # ------------------------------------------------------------------ configuration
    @property
    def config(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "base": self.base,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_shards": self.n_shards,
            "unit": self.unit,
            "partition": self.partition,
            "aggregation": self.aggregation,
            "seed": self.seed,
            "threads": self.threads,
            "steps_per_epoch": self.steps_per_epoch,
            "params": dict(self.params),
            "aggregator": dict(self.agg_settings),
        }

    def shard_seed(self, shard: int) -> int:
        return self.seed + 1 + int(shard)

    def shard_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Shard of every pair; a pair outside an interaction partition is an error."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if self.unit == "user":
            return self.assignment[users]
        if self.unit == "item":
            return self.assignment[items]
        keys = users * self.n_items + items
        pos = np.searchsorted(self.pair_keys, keys).clip(max=max(len(self.pair_keys) - 1, 0))
        if len(keys) and not np.array_equal(self.pair_keys[pos], keys):
            raise ValueError("pairs outside the interaction partition of this sharded model")
        return self.assignment[pos]

    def split(self, train: Pairs) -> list[Pairs]:
        """The pairs of every shard, in the order of ``train``."""
        users = np.asarray(train[0], dtype=np.int64)
        items = np.asarray(train[1], dtype=np.int64)
        shard = self.shard_of(users, items)
        return [(users[shard == s], items[shard == s]) for s in range(self.n_shards)]

    def shard_params(self, shard: int, n_pairs: int) -> dict[str, Any]:
        """``build_model`` overrides of a shard: the base parameters, the shard's seed and, with
        ``steps_per_epoch``, the batch size giving that many steps per epoch on ``n_pairs``
        (a function of the shard's own data only, so exactness is kept)."""
        params = {**self.params, "seed": self.shard_seed(shard)}
        if self.steps_per_epoch is not None:
            params["batch_size"] = max(1, math.ceil(n_pairs / self.steps_per_epoch))
        return params

    def shard_users(self, shard: int) -> int:
        """Rows of a sub-model's user table (a user shard holds only its own users)."""
        return self.n_users if self.members is None else len(self.members[shard])

    def shard_job(self, shard: int, pairs: Pairs) -> dict:
        """What trains sub-model ``shard`` from scratch on ``pairs`` (global indices; a user
        shard's sub-model sees its users' local indices)."""
        users = pairs[0] if self.local is None else self.local[pairs[0]]
        return {
            "model": self.base,
            "n_users": self.shard_users(shard),
            "n_items": self.n_items,
            "params": self.shard_params(shard, len(pairs[0])),
            "users": users,
            "items": pairs[1],
            "threads": self.threads,
        }

    # ------------------------------------------------------------------ training
    def fit(self, train: Pairs, processes: int | None = None) -> ShardedModel:
        """Train every shard from scratch on its part of ``train``, then the aggregator."""
        parts = self.split(train)
        empty = [s for s, p in enumerate(parts) if len(p[0]) == 0]
        if empty:
            raise ValueError(f"shard(s) {empty} hold no training pair; use fewer shards")
        t0 = time.perf_counter()
        models, info = run_jobs([self.shard_job(s, p) for s, p in enumerate(parts)], processes)
        self.shards = nn.ModuleList(models)
        self.shard_hashes = [pairs_hash(*p) for p in parts]
        self.shard_sizes = [len(p[0]) for p in parts]
        self.history = [{"shards_seconds": time.perf_counter() - t0, **info}]
        self.fit_aggregator(train)
        return self

    def retrain(
        self, train: Pairs, shards: Sequence[int], processes: int | None = None
    ) -> tuple[ShardedModel, dict]:
        """A copy whose ``shards`` are retrained from scratch on their part of ``train`` (the
        retained pairs) while the others are kept; the aggregator is retrained on ``train``.
        The kept shards' data must be unchanged (checked against their hashes)."""
        parts = self.split(train)
        shards = sorted({int(s) for s in shards})
        for s in range(self.n_shards):
            if s not in shards and pairs_hash(*parts[s]) != self.shard_hashes[s]:
                raise ValueError(f"shard {s} lost data but is not among the shards to retrain")
        new = self._copy()
        t0 = time.perf_counter()
        todo = [s for s in shards if len(parts[s][0])]
        models, info = run_jobs([self.shard_job(s, parts[s]) for s in todo], processes)
        for s, m in zip(todo, models):
            new.shards[s] = m
        for s in shards:
            if not len(parts[s][0]):  # a shard left without data: its seeded initial model
                job = self.shard_job(s, parts[s])
                m = build_model(self.base, job["n_users"], self.n_items, **job["params"])
                if hasattr(m, "set_graph"):
                    m.set_graph(job["users"], job["items"])
                new.shards[s] = m.eval()
            new.shard_hashes[s] = pairs_hash(*parts[s])
            new.shard_sizes[s] = len(parts[s][0])
        info = {"shards_seconds": time.perf_counter() - t0, "retrained": shards, **info}
        t1 = time.perf_counter()
        new.fit_aggregator(train)
        info["aggregator_seconds"] = time.perf_counter() - t1
        new.history = [*self.history, info]
        return new, info

    def fit_aggregator(self, train: Pairs) -> None:
        """(Re)train the attention aggregator from its seeded initialisation (no-op for mean)."""
        if self.aggregation != "attention":
            self.aggregator = None
            return
        s = self.agg_settings
        dim = int(self.shards[0].user_emb.weight.shape[1])
        self.aggregator = AttentionAggregator(self.n_shards, dim, int(s["hidden"]), self.seed)
        ue, ie = self.shard_embeddings()
        self.aggregator_history = train_aggregator(
            self.aggregator, ue, ie, train, int(s["epochs"]), float(s["lr"]),
            int(s["batch_size"]), int(s["n_neg"]), float(s["reg"]), self.seed, self.membership(),
        )  # fmt: skip

    def _copy(self) -> ShardedModel:
        new = ShardedModel(
            self.base, self.n_users, self.n_items, self.params, self.unit, self.assignment,
            self.n_shards, self.aggregation, self.pair_keys, self.partition, self.seed,
            self.threads, dict(self.agg_settings), self.steps_per_epoch,
        )  # fmt: skip
        new.shards = nn.ModuleList(list(self.shards))  # kept shards: the same modules
        new.shard_hashes = list(self.shard_hashes)
        new.shard_sizes = list(self.shard_sizes)
        new.ledger_version = self.ledger_version
        new.extra = dict(self.extra)
        return new

    # ------------------------------------------------------------------ scoring
    def membership(self) -> torch.Tensor | None:
        """``[n_users, S]`` bool: the shard holding each user (user partitions), else None."""
        if self.members is None:
            return None
        member = torch.zeros(self.n_users, self.n_shards, dtype=torch.bool)
        member[torch.arange(self.n_users), torch.as_tensor(self.assignment)] = True
        return member

    def shard_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final embeddings of every shard stacked: ``[n_users, S, d]``, ``[n_items, S, d]``
        (for a user partition, zero where a shard does not hold the user)."""
        us, its = zip(*(m.final_embeddings() for m in self.shards))
        items = torch.stack(its, 1)
        if self.members is None:
            return torch.stack(us, 1), items
        users = torch.zeros(self.n_users, self.n_shards, us[0].shape[1], dtype=us[0].dtype)
        for k, (m, emb) in enumerate(zip(self.members, us)):
            users[torch.as_tensor(m), k] = emb
        return users, items

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregated user and item embeddings whose dot product is the score."""
        ue, ie = self.shard_embeddings()
        if self.aggregation == "mean":
            return ue.reshape(self.n_users, -1) / self.n_shards, ie.reshape(self.n_items, -1)
        with torch.no_grad():
            u, i = self.aggregator(ue, ie, self.membership())
        return u.detach(), i.detach()

    def user_embeddings(self) -> torch.Tensor:
        return self.final_embeddings()[0]

    def item_embeddings(self) -> torch.Tensor:
        return self.final_embeddings()[1]

    def score(self, user_idx) -> torch.Tensor:
        """Scores ``[len(user_idx), n_items]`` (mean: the average of the shards' scores)."""
        idx = torch.as_tensor(np.asarray(user_idx), dtype=torch.int64).reshape(-1)
        u, i = self.final_embeddings()
        return u[idx] @ i.T

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, ledger_version: int, extra: dict | None = None) -> Path:
        """One checkpoint file (atomic): config, partition, every shard (with its data hash and
        size), the aggregator and ``ledger_version``."""
        payload = {
            "format": SHARDED_FORMAT,
            "class": type(self).__name__,
            "config": self.config,
            "assignment": torch.as_tensor(self.assignment),
            "pair_keys": None if self.pair_keys is None else torch.as_tensor(self.pair_keys),
            "shards": [
                {
                    "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
                    "model_extra": m._checkpoint_extra(),
                    "history": list(m.history),
                }
                for m in self.shards
            ],
            "shard_hashes": list(self.shard_hashes),
            "shard_sizes": list(self.shard_sizes),
            "aggregator": None
            if self.aggregator is None
            else {k: v.detach().cpu() for k, v in self.aggregator.state_dict().items()},
            "ledger_version": int(ledger_version),
            "history": list(self.history),
            "extra": dict(extra or {}),
        }
        path = Path(path)
        atomic_save(path, lambda tmp: torch.save(payload, tmp))
        self.ledger_version = int(ledger_version)
        self.extra = dict(extra or {})
        return path

    def __repr__(self) -> str:
        return (
            f"ShardedModel({self.base}, {self.n_shards} {self.unit} shards, "
            f"{self.aggregation} aggregation)"
        )


def load_any_model(path: str | Path, device: str | None = None) -> CFModel | ShardedModel:
    """A checkpoint of either kind: :meth:`CFModel.save` or :meth:`ShardedModel.save`."""
    from llmrec.models import load_model

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("class") == "ShardedModel":
        return load_sharded(path)
    return load_model(path, device=device)


def load_sharded(path: str | Path) -> ShardedModel:
    """Load a checkpoint written by :meth:`ShardedModel.save`."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("class") != "ShardedModel":
        raise ValueError(f"{path}: not a sharded model checkpoint")
    if payload.get("format") != SHARDED_FORMAT:
        raise ValueError(f"{path}: unsupported sharded checkpoint format {payload.get('format')}")
    c = payload["config"]
    keys = payload["pair_keys"]
    model = ShardedModel(
        c["base"], c["n_users"], c["n_items"], c["params"], c["unit"],
        payload["assignment"].numpy(), c["n_shards"], c["aggregation"],
        None if keys is None else keys.numpy(), c["partition"], c["seed"], c["threads"],
        c["aggregator"], c["steps_per_epoch"],
    )  # fmt: skip
    shards = []
    for s, entry in enumerate(payload["shards"]):
        params = model.shard_params(s, int(payload["shard_sizes"][s]))
        m = build_model(c["base"], model.shard_users(s), c["n_items"], **params)
        m.load_state_dict(entry["state_dict"])
        m._restore_extra(entry["model_extra"])
        m.history = list(entry["history"])
        shards.append(m.eval())
    model.shards = nn.ModuleList(shards)
    model.shard_hashes = list(payload["shard_hashes"])
    model.shard_sizes = list(payload["shard_sizes"])
    if payload["aggregator"] is not None:
        dim = int(shards[0].user_emb.weight.shape[1])
        model.aggregator = AttentionAggregator(
            c["n_shards"], dim, int(c["aggregator"]["hidden"]), c["seed"]
        )
        model.aggregator.load_state_dict(payload["aggregator"])
        model.aggregator.eval()
    model.history = list(payload["history"])
    model.ledger_version = int(payload["ledger_version"])
    model.extra = dict(payload["extra"])
    return model.eval()


# ------------------------------------------------------------------------------ unlearners


class _Sharded(Unlearner):
    """Common part of SISA and RecEraser: build (when given a plain CF model) and unlearn."""

    handles = ("interactions", "user", "item")

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if params.get("cache_dir") is not None:
            params["cache_dir"] = str(params["cache_dir"])
        return params

    @abc.abstractmethod
    def build(self, model: CFModel, train: Pairs) -> ShardedModel:
        """The sharded model for ``model``'s hyper-parameters, trained on ``train``."""

    def _sharded(self, model: CFModel, train: Pairs, **kwargs: Any) -> ShardedModel:
        params = hyper_parameters(model)
        params.pop("seed", None)
        # every sub-model makes as many optimiser steps per epoch as the base model does on
        # the whole training data (a shard with the base batch size would make a tenth)
        steps = math.ceil(len(train[0]) / int(params["batch_size"])) if self.matched_steps else None
        return ShardedModel(
            model.model_name, model.n_users, model.n_items, params, n_shards=self.n_shards,
            seed=self.seed, threads=self.threads, steps_per_epoch=steps, **kwargs,
        )  # fmt: skip

    def cached_build(self, model: CFModel, train: Pairs) -> tuple[ShardedModel, bool]:
        """:meth:`build`, read from / written to ``cache_dir`` when set (keyed by the model's
        fingerprint, the training pairs and the settings); returns whether it was built."""
        if self.cache_dir is None:
            return self.build(model, train), True
        settings = {
            k: v for k, v in self.get_params().items() if k not in ("processes", "cache_dir")
        }
        key = hashlib.sha256(
            repr((model_fingerprint(model), train_hash(train), sorted(settings.items()))).encode()
        ).hexdigest()[:16]
        path = Path(self.cache_dir) / f"{self.name}-{model.model_name}-{key}.pt"
        if path.is_file():
            return load_sharded(path), False
        sharded = self.build(model, train)
        sharded.save(path, model.ledger_version or 0, extra={"source_fingerprint": key})
        return sharded, True

    def _unlearn(self, model, task: UnlearnTask, monitor: Monitor) -> tuple[ShardedModel, dict]:
        initial, built = 0.0, False
        if not isinstance(model, ShardedModel):
            # the sharded model of the data before the request: built (or read from the cache)
            # off the request's clock
            (model, built), initial = off_clock(
                monitor, self.cached_build, model, task.train_before
            )
            model.ledger_version = task.before.version
        removed = model.shard_of(*task.forget)
        touched = sorted({int(s) for s in np.unique(removed)})
        new, info = model.retrain(task.train, touched, self.processes)
        monitor.report(new, iteration=1, retrained_shards=len(touched))
        return new, {
            "iterations": 1,
            "initial_seconds": initial,
            "initial_built": built,
            "retrained_shards": touched,
            "n_retrained": len(touched),
            "n_shards": model.n_shards,
            "shards_seconds": info["shards_seconds"],
            "aggregator_seconds": info["aggregator_seconds"],
            "processes": info["processes"],
            "fallback": info["fallback"],
        }


class SISA(_Sharded):
    """SISA: random user shards, one sub-model each, score averaging."""

    name = "sisa"

    def __init__(
        self,
        n_shards: int = 10,
        processes: int | None = None,
        threads: int = 1,
        matched_steps: bool = True,
        cache_dir: str | Path | None = None,
        seed: int = 2020,
    ) -> None:
        self.n_shards = n_shards
        self.processes = processes
        self.matched_steps = matched_steps
        self.cache_dir = cache_dir
        self.threads = threads
        self.seed = seed

    def build(self, model: CFModel, train: Pairs) -> ShardedModel:
        shard = random_partition(model.n_users, self.n_shards, self.seed)
        sharded = self._sharded(model, train, unit="user", assignment=shard)
        return sharded.fit(train, self.processes)


class RecEraser(_Sharded):
    """RecEraser: balanced k-means partition of users, items or interactions on the trained
    model's embeddings, one sub-model per shard, attention aggregation."""

    name = "receraser"

    def __init__(
        self,
        n_shards: int = 10,
        unit: str = "user",
        kmeans_iterations: int = 5,
        agg_epochs: int = 10,
        agg_lr: float = 0.02,
        processes: int | None = None,
        threads: int = 1,
        matched_steps: bool = True,
        cache_dir: str | Path | None = None,
        seed: int = 2020,
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.n_shards = n_shards
        self.unit = unit
        self.kmeans_iterations = kmeans_iterations
        self.agg_epochs = agg_epochs
        self.agg_lr = agg_lr
        self.processes = processes
        self.matched_steps = matched_steps
        self.cache_dir = cache_dir
        self.threads = threads
        self.seed = seed

    def partition(self, model: CFModel, train: Pairs) -> tuple[np.ndarray, np.ndarray | None]:
        """Balanced k-means on the pre-trained embeddings of ``model``: ``(assignment, keys)``."""
        p, q = (t.detach().cpu().numpy() for t in model.final_embeddings())
        if self.unit == "user":
            emb, keys = p, None
        elif self.unit == "item":
            emb, keys = q, None
        else:
            users = np.asarray(train[0], dtype=np.int64)
            items = np.asarray(train[1], dtype=np.int64)
            keys, first = np.unique(users * model.n_items + items, return_index=True)
            emb = np.concatenate([p[users[first]], q[items[first]]], axis=1)
        shard, _ = balanced_kmeans(emb, self.n_shards, self.seed, self.kmeans_iterations)
        return shard, keys

    def build(self, model: CFModel, train: Pairs) -> ShardedModel:
        shard, keys = self.partition(model, train)
        sharded = self._sharded(
            model, train, unit=self.unit, assignment=shard, pair_keys=keys,
            aggregation="attention", partition="kmeans",
            agg_settings={"epochs": self.agg_epochs, "lr": self.agg_lr},
        )  # fmt: skip
        return sharded.fit(train, self.processes)
