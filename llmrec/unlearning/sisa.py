"""SISA (Bourtoule et al., "Machine Unlearning", S&P 2021) for recommendation: random user
shards, one sub-model each, score averaging; exact (:mod:`llmrec.unlearning.sharded_model`).
"""

from __future__ import annotations

from llmrec.data.partition import random_partition
from llmrec.models import CFModel
from llmrec.unlearning.base import Pairs
from llmrec.unlearning.registry import register_method
from llmrec.unlearning.shard_unlearner import ShardedUnlearner
from llmrec.unlearning.sharded_model import ShardedModel


@register_method
class SISA(ShardedUnlearner):
    """SISA: random user shards, one sub-model each, score averaging (the settings of
    :class:`ShardedUnlearner`)."""

    name = "sisa"
    workspace_cache = "artifacts/sisa-cache/{model}"

    def build(self, model: CFModel, train: Pairs) -> ShardedModel:
        shard = random_partition(model.n_users, self.n_shards, self.seed)
        sharded = self._sharded(model, train, unit="user", assignment=shard)
        return sharded.fit(train, self.processes)
