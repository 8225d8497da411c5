"""Small shared builders for the LLM tests (imported by test_llm_*.py and test_cragru*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmrec.data.synthetic import SyntheticSpec, write_synthetic
from llmrec.llm.adapters import AdapterConfig
from llmrec.llm.lm_builder import LMConfig, build_lm
from llmrec.llm.lora import LoraSettings
from llmrec.llm.shards import ExampleSettings
from llmrec.workspace import Workspace

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


def small_workspace(root: Path, interactions: int = 1500, seed: int = 7) -> Workspace:
    """A synthetic dataset (60 users, 80 items, attributes, item text) in a fresh workspace."""
    data = write_synthetic(
        SyntheticSpec(interactions, users=60, items=80, seed=seed), root / "data", "syn"
    )
    return Workspace(root / "ws", dataset="syn", data_dir=data)


def tiny_lm(ws: Workspace, out: Path) -> Path:
    torch.set_num_threads(1)
    build_lm(ws.dataset, out, TINY_LM, seed=1)
    return out


def adapter_config(base: Path, n_shards: int = 3, epochs: int = 2) -> AdapterConfig:
    return AdapterConfig(
        base=str(base),
        n_shards=n_shards,
        seed=11,
        lora=LoraSettings(r=4, epochs=epochs, batch_size=8),
        examples=ExampleSettings(history=20, n_candidates=10),
    )


def test_small_workspace_is_deterministic(tmp_path):
    a = small_workspace(tmp_path / "a").dataset
    b = small_workspace(tmp_path / "b").dataset
    assert a.n_users == 60 and a.n_items == 80
    assert np.array_equal(a.inter_item, b.inter_item)


def test_unnamed_template_is_the_one_the_base_was_adapted_with(tmp_path):
    """Tuning without --template uses the template a toolkit-built base was adapted with (the
    default LM's recipe), not the library default: tuning, serving and build-lm agree."""
    import dataclasses

    from llmrec.llm.catalog import Catalog
    from llmrec.llm.recipe import serving

    ws = small_workspace(tmp_path)
    lm = tmp_path / "lm"
    build_lm(ws.dataset, lm, dataclasses.replace(TINY_LM, template="cragru"), seed=1)
    assert serving(lm).template == "cragru"
    cfg = adapter_config(lm).resolved(Catalog.from_dataset(ws.dataset))
    assert cfg.template == "cragru"
