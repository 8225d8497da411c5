"""The Hugging Face backend keeps the backend contract (:mod:`llmrec.testing.backend`): on the
tiny catalogue LM with two shard adapters (merged per adapter, and switched on one peft model)
and on a tiny random Llama whose item ids are spelled as text (the text-level constraint)."""

from __future__ import annotations

import pytest
import torch

from llmrec.llm.adapters import adapter_paths, tune_adapters
from llmrec.llm.backends.hf import HFBackend
from llmrec.llm.catalog import Catalog
from llmrec.llm.tiny_models import build_tiny, catalog_corpus_text
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.backend import CHECKS, BackendCase, contract_contexts
from tests.llm.test_llm_fixtures import adapter_config, small_workspace, tiny_lm

KINDS = ("merged", "switched", "text-ids")


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
        merge = request.param == "merged"
        backend = HFBackend.from_pretrained(lm, cat, adapters=paths, merge=merge, top_k=4)
        backend.batch_size = 2
    return BackendCase(backend, contract_contexts(len(cat), n_users=3, n_candidates=6))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_hf_backend_keeps_the_contract(case, check):
    check(case)
