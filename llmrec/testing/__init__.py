"""What a plug-in author runs: llmrec's contract suites and small test fixtures, public.

* :class:`StageContract` (:mod:`llmrec.testing.stages`): the forget-stage contract as a pytest
  mixin;
* :func:`check_unlearner`, :func:`build_tiny`, :func:`method_cases`
  (:mod:`llmrec.testing.unlearners`): the unlearner contract's checks on a tiny workspace;
* :func:`write_tiny_dataset`, :func:`tiny_workspace`, :func:`small_workspace`
  (:mod:`llmrec.testing.fixtures`): datasets and workspaces built in milliseconds;
* :func:`tiny_lm`, :func:`adapter_config`, :data:`TINY_LM` (:mod:`llmrec.testing.lm`): a
  one-layer base LM and a small adapter configuration for the LLM path;
* :class:`BackendCase` and :data:`CHECKS` (:mod:`llmrec.testing.backend`): the serving-backend
  contract, one check function per rule.

Names load on first use (the LLM builders import torch and transformers). Nothing in the
library imports this package; it needs pytest.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "StageContract": "stages",
    "artifact_digest": "stages",
    "forget_after_copy": "stages",
    "write_tiny_dataset": "fixtures",
    "tiny_workspace": "fixtures",
    "small_workspace": "fixtures",
    "TINY_LM": "lm",
    "tiny_lm": "lm",
    "adapter_config": "lm",
    "Tiny": "unlearners",
    "build_tiny": "unlearners",
    "check_unlearner": "unlearners",
    "method_cases": "unlearners",
    "BackendCase": "backend",
    "CHECKS": "backend",
    "check_backend": "backend",
    "contract_contexts": "backend",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrec.testing' has no attribute {name!r}")
    if module == "stages":
        from llmrec.testing import stages as mod
    elif module == "fixtures":
        from llmrec.testing import fixtures as mod
    elif module == "unlearners":
        from llmrec.testing import unlearners as mod
    elif module == "backend":
        from llmrec.testing import backend as mod
    else:
        from llmrec.testing import lm as mod
    return getattr(mod, name)
