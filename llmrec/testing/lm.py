"""LLM-path builders for tests: a one-layer base LM trained from scratch on the dataset's own
text in seconds (:func:`tiny_lm`) and a small adapter configuration (:func:`adapter_config`)."""

from __future__ import annotations

from pathlib import Path

from llmrec.llm.adapters import AdapterConfig
from llmrec.llm.lm_builder import LMConfig, build_lm
from llmrec.llm.lora import LoraSettings
from llmrec.llm.shards import ExampleSettings
from llmrec.workspace import Workspace

__all__ = ["TINY_LM", "adapter_config", "tiny_lm"]

#: a one-layer, 32-wide GPT-2 with a 300-token BPE vocabulary, one epoch
TINY_LM = LMConfig(
    init="scratch",
    n_layer=1,
    n_embd=32,
    n_head=2,
    n_positions=256,
    bpe_vocab=300,
    block_size=64,
    epochs=1,
    sessions=40,
    template="compact",
)


def tiny_lm(ws: Workspace, out: Path) -> Path:
    """Build :data:`TINY_LM` on ``ws``'s dataset into ``out`` (one thread, seed 1)."""
    import torch

    torch.set_num_threads(1)
    build_lm(ws.dataset, out, TINY_LM, seed=1)
    return out


def adapter_config(base: Path, n_shards: int = 3, epochs: int = 2) -> AdapterConfig:
    """LoRA rank 4 over ``base``, ``n_shards`` shards, short histories and candidate lists."""
    return AdapterConfig(
        base=str(base),
        n_shards=n_shards,
        seed=11,
        lora=LoraSettings(r=4, epochs=epochs, batch_size=8),
        examples=ExampleSettings(history=20, n_candidates=10),
    )
