"""Experiments: the comparison harness (``compare/``), the CRAGRU scenario and the paper's
protocol. Scripts and ``llmrec compare`` import them; nothing below this layer does. Names load
on first use."""

from __future__ import annotations

from typing import Any

_COMPARE = ("Scenario", "run_compare", "run_method", "run_seed")
_SCENARIO = ("ScenarioConfig", "run_scenario")
_PAPER = ("ProtocolConfig", "run_protocols")
__all__ = sorted([*_COMPARE, *_SCENARIO, *_PAPER])


def __getattr__(name: str) -> Any:
    if name in _COMPARE:
        from llmrec.experiments import compare as mod
    elif name in _SCENARIO:
        from llmrec.experiments import cragru_scenario as mod
    elif name in _PAPER:
        from llmrec.experiments import cragru_paper as mod
    else:
        raise AttributeError(f"module 'llmrec.experiments' has no attribute {name!r}")
    return getattr(mod, name)
