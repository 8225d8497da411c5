"""Embedding unlearners for CF models: Retrain (gold), FineTune, AltEraser, LEGO, reverse BPR,
UnlearnRec, and the shard-based exact methods SISA and RecEraser.

Every method is an :class:`Unlearner` configured in ``__init__`` and applied with
``unlearner.unlearn(model, workspace_or_data, requests) -> (new_model, UnlearnRecord)``; it
registers itself with :func:`register_method` in its own module, and importing this package
imports every method module, so :func:`method_names` / :func:`get_method` see them all.
"""

from llmrec.unlearning.base import (
    Unlearner,
    UnlearnRecord,
    UnlearnTask,
    make_task,
)
from llmrec.unlearning.registry import (
    METHODS,
    UnknownMethodError,
    get_method,
    make_unlearner,
    method_names,
    register_method,
    unregister_method,
)

# the methods, in the order the CLI lists them (each module registers its classes)
from llmrec.unlearning.retrain import Retrain  # isort: skip
from llmrec.unlearning.finetune import FineTune  # isort: skip
from llmrec.unlearning.alteraser import AltEraser  # isort: skip
from llmrec.unlearning.reverse_bpr import ReverseBPR  # isort: skip
from llmrec.unlearning.lego import LEGO  # isort: skip
from llmrec.unlearning.unlearnrec import UnlearnRec  # isort: skip
from llmrec.unlearning.sisa import SISA  # isort: skip
from llmrec.unlearning.receraser import RecEraser  # isort: skip
from llmrec.unlearning.sharded_model import ShardedModel  # isort: skip

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
    "UnknownMethodError",
    "UnlearnRec",
    "UnlearnRecord",
    "UnlearnTask",
    "Unlearner",
    "get_method",
    "make_task",
    "make_unlearner",
    "method_names",
    "register_method",
    "unregister_method",
]
