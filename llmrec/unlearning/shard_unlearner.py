"""What SISA and RecEraser share: build the sharded model of a plain CF model (cached), then
retrain exactly the shards a request removes data from (:mod:`llmrec.unlearning.sharded_model`).
"""

from __future__ import annotations

import abc
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.models import CFModel
from llmrec.unlearning.base import Monitor, Pairs, Unlearner, UnlearnTask, hyper_parameters
from llmrec.unlearning.fingerprint import model_fingerprint, pairs_hash
from llmrec.unlearning.sharded_model import ShardedModel, load_sharded


class ShardedUnlearner(Unlearner):
    """Common part of SISA and RecEraser: build (when given a plain CF model) and unlearn.

    ``n_shards`` sub-models, trained in ``processes`` worker processes (None: one per CPU; 1:
    in-process) with ``threads`` torch threads each; ``matched_steps``: a shard makes as many
    optimiser steps per epoch as the base model does; ``cache_dir``: where the sharded model of
    a trained model is kept for later requests; ``seed``: partition and sub-model seeds.
    """

    handles = ("interactions", "user", "item")
    exact = True

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
        self.threads = threads
        self.matched_steps = matched_steps
        self.cache_dir = cache_dir
        self.seed = seed

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
            repr((model_fingerprint(model), pairs_hash(train), sorted(settings.items()))).encode()
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
            (model, built), initial = monitor.off_clock(self.cached_build, model, task.train_before)
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
