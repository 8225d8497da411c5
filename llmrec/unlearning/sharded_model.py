"""The sharded model of shard-based exact unlearning: SISA (Bourtoule et al., S&P 2021) and
RecEraser (Chen et al., "Recommendation Unlearning", WWW 2022).

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
* ``attention`` (RecEraser's adaptive aggregation): a learned attention over the shards'
  embeddings, retrained after every request (:mod:`llmrec.unlearning.shard_aggregation`).

The partition itself is fixed when the sharded model is built (as in both papers): with
``partition="kmeans"`` it was computed from embeddings of a model trained on the data of that
time, which a strict reading of exact unlearning must accept or avoid (``partition="random"``
depends on the seed only).

Shards train in a pool of worker processes (:mod:`llmrec.unlearning.shard_pool`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from llmrec.data.partition import UNITS
from llmrec.io import atomic_save
from llmrec.models import build_model
from llmrec.unlearning.base import Pairs
from llmrec.unlearning.fingerprint import pairs_hash
from llmrec.unlearning.shard_aggregation import AttentionAggregator, train_aggregator
from llmrec.unlearning.shard_pool import run_jobs

SHARDED_FORMAT = 1


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
        self.shard_hashes = [pairs_hash(p) for p in parts]
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
            if s not in shards and pairs_hash(parts[s]) != self.shard_hashes[s]:
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
            new.shard_hashes[s] = pairs_hash(parts[s])
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
