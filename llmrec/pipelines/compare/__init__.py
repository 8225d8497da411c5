"""The comparison harness: one forget request through every registered method, each judged
against its own gold and original (``docs/design.md`` §5).

* :mod:`~llmrec.pipelines.compare.scenario` -- what is forgotten (``random:5%users``, ...);
* :mod:`~llmrec.pipelines.compare.base` -- what a method gets and returns, shared evaluation;
* :mod:`~llmrec.pipelines.compare.embedding` -- embedding unlearners as compared methods;
* :mod:`~llmrec.pipelines.compare.llm` -- the LLM path (CRAGRU and its zero-shot variant);
* :mod:`~llmrec.pipelines.compare.harness` -- one seed, all methods, the report;
* :mod:`~llmrec.pipelines.compare.stream` -- ``stream:N`` request streams.
"""

from llmrec.pipelines.compare.base import Context, MethodOutput, pairs, train_original
from llmrec.pipelines.compare.harness import (
    RETRAIN_TOLERANCE,
    method_handles,
    retrain_check,
    run_compare,
    run_method,
    run_seed,
)
from llmrec.pipelines.compare.llm import Cragru, CragruZeroShot, LLMMethod
from llmrec.pipelines.compare.scenario import Scenario

__all__ = [
    "RETRAIN_TOLERANCE",
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
