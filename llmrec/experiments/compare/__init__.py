"""The comparison harness: one forget request through every registered method, each judged
against its own gold and original (``docs/design.md`` §5).

* :mod:`~llmrec.experiments.compare.scenario` -- what is forgotten (``random:5%users``, ...);
* :mod:`~llmrec.experiments.compare.base` -- what a method gets and returns, shared evaluation;
* :mod:`~llmrec.experiments.compare.embedding` -- embedding unlearners as compared methods;
* :mod:`~llmrec.experiments.compare.llm` -- the LLM path (CRAGRU, its zero-shot variant and its
  candidate order, the control);
* :mod:`~llmrec.experiments.compare.harness` -- one seed, all methods, the report;
* :mod:`~llmrec.experiments.compare.stream` -- ``stream:N`` request streams.
"""

from llmrec.experiments.compare.base import Context, MethodOutput, pairs, train_original
from llmrec.experiments.compare.harness import (
    RETRAIN_TOLERANCE,
    method_handles,
    retrain_check,
    run_compare,
    run_method,
    run_seed,
)
from llmrec.experiments.compare.llm import CandidateOrder, Cragru, CragruZeroShot, LLMMethod
from llmrec.experiments.compare.scenario import Scenario

__all__ = [
    "RETRAIN_TOLERANCE",
    "CandidateOrder",
    "Context",
    "Cragru",
    "CragruZeroShot",
    "LLMMethod",
    "MethodOutput",
    "Scenario",
    "method_handles",
    "pairs",
    "retrain_check",
    "run_compare",
    "run_method",
    "run_seed",
    "train_original",
]
