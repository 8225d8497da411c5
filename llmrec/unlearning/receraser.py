"""RecEraser (Chen et al., "Recommendation Unlearning", WWW 2022): balanced k-means shards,
attention aggregation; exact (:mod:`llmrec.unlearning.sharded_model`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmrec.data.partition import UNITS, balanced_kmeans
from llmrec.models import CFModel
from llmrec.unlearning.base import Pairs
from llmrec.unlearning.registry import register_method
from llmrec.unlearning.shard_unlearner import ShardedUnlearner
from llmrec.unlearning.sharded_model import ShardedModel


@register_method
class RecEraser(ShardedUnlearner):
    """RecEraser: balanced k-means partition of users, items or interactions on the trained
    model's embeddings, one sub-model per shard, attention aggregation."""

    name = "receraser"
    workspace_cache = "artifacts/receraser-cache/{model}"

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
        super().__init__(n_shards, processes, threads, matched_steps, cache_dir, seed)
        self.unit = unit
        self.kmeans_iterations = kmeans_iterations
        self.agg_epochs = agg_epochs
        self.agg_lr = agg_lr

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
