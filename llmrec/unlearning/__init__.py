"""Embedding unlearners for CF models: Retrain (gold), FineTune, AltEraser, LEGO, reverse BPR,
UnlearnRec, and the shard-based exact methods SISA and RecEraser.

Every method is an :class:`Unlearner` configured in ``__init__`` and applied with
``unlearner.unlearn(model, workspace_or_data, requests) -> (new_model, UnlearnRecord)``.
"""

from llmrec.unlearning.alteraser import AltEraser
from llmrec.unlearning.base import (
    Unlearner,
    UnlearnRecord,
    UnlearnTask,
    make_task,
)
from llmrec.unlearning.finetune import FineTune
from llmrec.unlearning.lego import LEGO
from llmrec.unlearning.retrain import Retrain
from llmrec.unlearning.reverse_bpr import ReverseBPR
from llmrec.unlearning.sharded import SISA, RecEraser, ShardedModel
from llmrec.unlearning.unlearnrec import UnlearnRec

#: method name (CLI spelling) -> class
METHODS: dict[str, type[Unlearner]] = {
    cls.name: cls
    for cls in (Retrain, FineTune, AltEraser, LEGO, ReverseBPR, UnlearnRec, SISA, RecEraser)
}


def make_unlearner(name: str, **params) -> Unlearner:
    """An unlearner by its method name with ``params`` passed to its constructor."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](**params)


__all__ = [
    "METHODS",
    "AltEraser",
    "FineTune",
    "LEGO",
    "Retrain",
    "RecEraser",
    "ReverseBPR",
    "SISA",
    "ShardedModel",
    "UnlearnRec",
    "UnlearnRecord",
    "UnlearnTask",
    "Unlearner",
    "make_task",
    "make_unlearner",
]
