"""Adapters are bound to their base model, template and prompt contract; the audit verifies
the adapter files and the base; loading options pass through."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llmrec.data.context import StageContext
from llmrec.errors import ArtifactError
from llmrec.llm.adapters import adapters_root, load_config, shard_dir, tune_adapters
from llmrec.llm.audit import audit
from llmrec.llm.backends.hf import HFBackend
from llmrec.llm.catalog import Catalog
from llmrec.llm.prompt import PromptTooLong, UserContext
from llmrec.serving.cragru import CragruOptions, CragruPipeline, default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from retrieval.store import RetrievalStore


def audit_adapters(ws) -> list[dict]:
    """The adapters' forget audit at the ledger's newest version."""
    with ws.ledger() as led:
        return audit(StageContext.open(ws, led))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("binding")
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="cf", n_candidates=10, seed=3, n_clusters=4)
    tune_adapters(ws, adapter_config(lm, n_shards=2, epochs=1))
    return ws, lm


def test_serving_defaults_to_the_adapters_base_and_template(tuned):
    ws, lm = tuned
    pipe = CragruPipeline(ws, CragruOptions(n_candidates=10))
    assert pipe.backend.builder.template.name == load_config(ws).template == "compact"
    assert pipe.adapter_for(0) in pipe.backend.adapters


def test_other_base_or_template_is_an_error_unless_asked_for(tuned, tmp_path):
    ws, lm = tuned
    other = shutil.copytree(lm, tmp_path / "other-lm")
    with pytest.raises(ArtifactError, match="tuned on"):
        CragruPipeline(ws, CragruOptions(model=str(other)))
    with pytest.raises(ArtifactError, match="tuned with template"):
        CragruPipeline(ws, CragruOptions(template="cragru"))
    alone = CragruPipeline(ws, CragruOptions(model=str(other), adapters=False, n_candidates=10))
    assert alone.adapter_for(0) is None and alone.backend.adapters == []
    named = CragruPipeline(
        ws, CragruOptions(adapters=str(adapters_root(ws)), template="cragru", n_candidates=10)
    )
    assert named.backend.builder.template.name == "cragru" and named.adapter_for(0)


def test_broken_contract_is_an_error(tuned, tmp_path):
    ws, lm = tuned
    cfg_path = adapters_root(ws) / "config.json"
    saved = cfg_path.read_text()
    cfg = json.loads(saved)
    cfg["contract"]["bos"] = not cfg["contract"]["bos"]
    cfg_path.write_text(json.dumps(cfg))
    try:
        with pytest.raises(ArtifactError, match="prompt contract broken: bos"):
            CragruPipeline(ws)
    finally:
        cfg_path.write_text(saved)


def test_audit_verifies_adapter_files_base_and_config(tuned):
    ws, lm = tuned
    assert audit_adapters(ws) == []
    weights = shard_dir(adapters_root(ws), 1) / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    found = audit_adapters(ws)
    assert [f["artifact"] for f in found] == ["adapter/shard-001"]
    assert "content hash" in found[0]["problem"]
    weights.write_bytes(good)
    base = lm / "model.safetensors"
    original = base.read_bytes()
    base.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    found = audit_adapters(ws)
    assert len(found) == 2 and all(f"base model {lm}" in f["problem"] for f in found)
    base.write_bytes(original)
    cfg = adapters_root(ws) / "config.json"
    saved = cfg.read_text()
    cfg.unlink()
    (found,) = audit_adapters(ws)
    assert "config.json is missing" in found["problem"]
    cfg.write_text(saved)
    assert audit_adapters(ws) == []


def test_loading_options_pass_through(tuned):
    ws, lm = tuned
    cat = Catalog.from_dataset(ws.dataset)
    gen = HFBackend.from_pretrained(lm, cat, device_map="auto", dtype="bfloat16")
    assert next(gen.model.parameters()).dtype == torch.bfloat16
    ctx = UserContext(0, {}, ws.dataset.inter_item[:5], None, ws.dataset.inter_item[5:12])
    (r,) = gen.rank([ctx])  # a device-mapped model serves (no TypeError, no .to() fight)
    assert len(r.items) == len(set(ws.dataset.inter_item[5:12].tolist()))
    eager = HFBackend.from_pretrained(lm, cat, attn_implementation="eager")
    assert eager.model.config._attn_implementation == "eager"


def test_a_prompt_that_cannot_fit_is_a_clear_error(tuned):
    ws, lm = tuned
    cat = Catalog.from_dataset(ws.dataset)
    gen = HFBackend.from_pretrained(lm, cat, template="cragru", max_prompt_tokens=64)
    token = str(ws.dataset.user_tokens[0])
    ctx = UserContext(
        0, {}, ws.dataset.inter_item[:5], None, ws.dataset.inter_item[5:40], token=token
    )
    # 10 answer items alone need more than the 64 positions: the cause named is --top-k
    with pytest.raises(PromptTooLong, match="answer of 10 items .* use a smaller --top-k"):
        gen.rank([ctx])
    # a one-item answer fits, the 35 candidates do not: the user by their dataset id (not the
    # internal index) and the candidates named
    gen.builder.top_k, gen.builder._reserve = 1, None
    with pytest.raises(PromptTooLong, match=f"the prompt of user {token} .*35 candidates"):
        gen.rank([ctx])
