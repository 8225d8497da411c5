"""The LLM path: base-LM builders, per-shard LoRA adapters, prompts and answer parsing, and the
serving backends (:mod:`llmrec.llm.backends`). Names load on first use (torch and transformers
are imported only then)."""

from __future__ import annotations

from typing import Any

_ADAPTERS = ("AdapterConfig", "load_config", "stale_shards", "tune_adapters")
_BACKENDS = ("RankBackend", "Ranking", "create_backend", "register_backend")
_LM = ("LMConfig", "build_lm")
_LOADING = ("LoadOptions", "load_causal_lm", "load_tokenizer")
_PROMPT = ("PromptBuilder", "UserContext")
_PARSING = ("parse_ranking",)
__all__ = sorted([*_ADAPTERS, *_BACKENDS, *_LM, *_LOADING, *_PROMPT, *_PARSING])


def __getattr__(name: str) -> Any:
    if name in _ADAPTERS:
        from llmrec.llm import adapters as mod
    elif name in _BACKENDS:
        from llmrec.llm import backends as mod
    elif name in _LM:
        from llmrec.llm import lm_builder as mod
    elif name in _LOADING:
        from llmrec.llm import loading as mod
    elif name in _PROMPT:
        from llmrec.llm import prompt as mod
    elif name in _PARSING:
        from llmrec.llm import parsing as mod
    else:
        raise AttributeError(f"module 'llmrec.llm' has no attribute {name!r}")
    return getattr(mod, name)
