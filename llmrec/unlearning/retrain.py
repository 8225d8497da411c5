"""Retrain: the gold standard. A fresh model with the same hyper-parameters and seed, trained
from scratch on the retained training data (with the same early-stopping setting as the original:
validation on the retained valid part when the original was early-stopped)."""

from __future__ import annotations

from llmrec.models import CFModel, build_model
from llmrec.models.training import hyper_parameters, used_early_stopping
from llmrec.unlearning.base import Monitor, Unlearner, UnlearnTask
from llmrec.unlearning.registry import register_method


@register_method
class Retrain(Unlearner):
    """Train from scratch on the retained data (``early_stop=None``: as the original was)."""

    name = "retrain"
    exact = True

    def __init__(self, early_stop: bool | None = None, epochs: int | None = None) -> None:
        self.early_stop = early_stop
        self.epochs = epochs

    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        params = hyper_parameters(model)
        if self.epochs is not None:
            params["epochs"] = int(self.epochs)
        new = build_model(model.model_name, model.n_users, model.n_items, **params)
        early = used_early_stopping(model) if self.early_stop is None else self.early_stop
        new.fit(*task.train, valid=task.valid if early else None)
        for h in new.history:
            monitor.history.append({"iteration": h["epoch"], **h})
        return new, {"iterations": len(new.history), "early_stop": early}
