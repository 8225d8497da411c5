"""The Hugging Face backend keeps the backend contract (:mod:`llmrec.testing.backend`): on the
tiny catalogue LM with two shard adapters (merged per adapter, switched on one peft model, and
with the CPU serving options int8 + memo + prefix cache) and on a tiny random Llama whose item
ids are spelled as text (the text-level constraint). The CPU options: the memo answers an
unchanged request from memory and misses on any change a forget makes (prompt, candidates,
adapter bytes, forgotten set); the prefix cache gives the scores of the full forward pass."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from llmrec.llm.adapters import adapter_paths, tune_adapters
from llmrec.llm.backends.hf import HFBackend
from llmrec.llm.backends.memo import RankMemo
from llmrec.llm.catalog import Catalog
from llmrec.llm.tiny_models import build_tiny, catalog_corpus_text
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.backend import CHECKS, BackendCase, contract_contexts
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm

KINDS = ("merged", "switched", "cpu-options", "text-ids")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("backend")
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))
    tune_adapters(ws, adapter_config(lm.resolve(), n_shards=2, epochs=1))
    cat = Catalog.from_dataset(ws.dataset)
    llama = build_tiny("llama", root / "llama", catalog_corpus_text(cat), positions=512, seed=3)
    return lm, adapter_paths(ws)[1], cat, llama


@pytest.fixture(scope="module", params=KINDS)
def case(request, built):
    lm, paths, cat, llama = built
    torch.manual_seed(0)
    if request.param == "text-ids":
        backend = HFBackend.from_pretrained(llama, cat, template="cragru", batch_size=2, top_k=3)
    else:
        merge = request.param != "switched"
        fast = {"quantize": "int8", "memo": RankMemo(), "prefix_cache": True}
        opts = fast if request.param == "cpu-options" else {}
        backend = HFBackend.from_pretrained(lm, cat, adapters=paths, merge=merge, top_k=4, **opts)
        backend.batch_size = 2
    return BackendCase(backend, contract_contexts(len(cat), n_users=3, n_candidates=6))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_hf_backend_keeps_the_contract(case, check):
    check(case)


def _same(a, b) -> bool:
    return all(
        np.array_equal(x.items, y.items) and np.array_equal(x.scores, y.scores, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("mode", ["likelihood", "json"])
def test_memo_answers_unchanged_requests_and_misses_every_change_a_forget_makes(
    built, tmp_path, mode
):
    lm, paths, cat, _ = built
    memo = RankMemo()
    ctxs = contract_contexts(len(cat), n_users=4, n_candidates=6)
    plain = HFBackend.from_pretrained(lm, cat, adapters=paths, top_k=4)
    fresh = plain.rank(ctxs, mode, adapter="shard-000")
    one = HFBackend.from_pretrained(lm, cat, adapters=paths, top_k=4, memo=memo)
    assert _same(one.rank(ctxs, mode, adapter="shard-000"), fresh)
    # another backend on the same files: every answer from the memo, identical
    two = HFBackend.from_pretrained(lm, cat, adapters=paths, top_k=4, memo=memo)
    assert _same(two.rank(ctxs, mode, adapter="shard-000"), fresh)
    assert two.stats["memo_hits"] == 4 and two.stats["prompt_tokens"] == 0
    # a history item forgotten: that user's prompt changed, only they are recomputed
    changed = list(ctxs)
    changed[1] = replace(ctxs[1], history_items=ctxs[1].history_items[1:],
                         history_ratings=ctxs[1].history_ratings[1:])  # fmt: skip
    got = two.rank(changed, mode, adapter="shard-000")
    assert two.stats["memo_hits"] == 4 + 3
    assert _same(got, plain.rank(changed, mode, adapter="shard-000"))
    # a candidate forgotten: never served, that user recomputed
    forgotten = np.zeros(len(cat), dtype=bool)
    forgotten[int(ctxs[2].candidates[0])] = True
    got = two.rank(ctxs, mode, forgotten=forgotten, adapter="shard-000")
    assert not any(forgotten[r.items].any() for r in got)
    assert _same(got, plain.rank(ctxs, mode, forgotten=forgotten, adapter="shard-000"))
    # another adapter, or the same adapter name with other bytes (re-tuned): all recomputed
    hits = two.stats["memo_hits"]
    two.rank(ctxs, mode, adapter="shard-001")
    assert two.stats["memo_hits"] == hits
    moved = {n: shutil.copytree(p, tmp_path / n) for n, p in paths.items()}
    weights = moved["shard-000"] / "adapter_model.safetensors"
    state = load_file(weights)
    save_file({k: v * 2 for k, v in state.items()}, weights)
    three = HFBackend.from_pretrained(lm, cat, adapters=moved, top_k=4, memo=memo)
    retuned = three.rank(ctxs, mode, adapter="shard-000")
    assert three.stats["memo_hits"] == 0
    ref = HFBackend.from_pretrained(lm, cat, adapters=moved, top_k=4)
    assert _same(retuned, ref.rank(ctxs, mode, adapter="shard-000"))


def test_prefix_cache_gives_the_full_pass_scores(built):
    _, _, cat, llama = built
    ctxs = contract_contexts(len(cat), n_users=3, n_candidates=5)
    full = HFBackend.from_pretrained(llama, cat, template="cragru", batch_size=3, top_k=3)
    cached = HFBackend.from_pretrained(
        llama, cat, template="cragru", batch_size=3, top_k=3, prefix_cache=True
    )
    assert len(cached.instruction_prefix()) >= 8  # the system prompt
    for mode in ("likelihood", "verbalizer"):
        for a, b in zip(full.rank(ctxs, mode), cached.rank(ctxs, mode)):
            assert np.array_equal(a.items, b.items)
            assert np.allclose(a.scores, b.scores, atol=1e-5)
    assert cached._prefix_kv  # the prefix's cache was built and used


def test_int8_is_refused_where_it_cannot_serve(built):
    lm, paths, cat, _ = built
    with pytest.raises(ValueError, match="merged adapters only"):
        HFBackend.from_pretrained(lm, cat, adapters=paths, merge=False, quantize="int8")
    with pytest.raises(ValueError, match="quantize must be"):
        HFBackend.from_pretrained(lm, cat, quantize="int4")
