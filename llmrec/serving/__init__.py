"""Serving: CRAGRU's retrieval + LLM regeneration for one user, its served-score blend and the
served-recommendation log. The CRAGRU names load on first use (they bring in the LM stack)."""

from __future__ import annotations

from typing import Any

from llmrec.serving.prerequisites import ServingPlan, serving_plan
from llmrec.serving.served_log import log_served, read_log, suppress_filter

_CRAGRU = ("BLEND_GRID", "CragruOptions", "CragruPipeline", "blend_ranking", "default_lm_dir")
__all__ = [
    "BLEND_GRID",
    "CragruOptions",
    "CragruPipeline",
    "ServingPlan",
    "blend_ranking",
    "default_lm_dir",
    "log_served",
    "read_log",
    "serving_plan",
    "suppress_filter",
]


def __getattr__(name: str) -> Any:
    if name in _CRAGRU:
        from llmrec.serving import cragru as mod
    else:
        raise AttributeError(f"module 'llmrec.serving' has no attribute {name!r}")
    return getattr(mod, name)
