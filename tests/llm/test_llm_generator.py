"""Generator modes on a tiny catalogue-trained LM: valid rankings, batching, forgotten items."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from llmrec.llm.backends.hf import HFBackend
from llmrec.llm.catalog import Catalog, ItemVerbalizer
from llmrec.llm.lm_builder import read_manifest
from llmrec.llm.prompt import UserContext
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm

MODES = ("likelihood", "json", "constrained")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    ws = small_workspace(root)
    lm = tiny_lm(ws, root / "lm")
    return ws, lm


def contexts(ws, n=6):
    ds = ws.dataset
    rng = np.random.default_rng(0)
    out = []
    for u in range(n):
        seen = ds.inter_item[ds.inter_user == u][:15]
        pool = np.setdiff1d(np.arange(ds.n_items), seen)
        out.append(
            UserContext(
                u,
                {"gender": "F", "age": "25"},
                seen,
                np.full(len(seen), 4.0),
                rng.permutation(pool)[:12],
            )
        )
    return out


def test_build_lm_is_a_plain_hf_model_without_user_data(setup):
    ws, lm = setup
    man = read_manifest(lm)
    assert man["holds_user_data"] is False and man["n_items"] == ws.dataset.n_items
    assert (lm / "config.json").is_file() and (lm / "tokenizer.json").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm))
    AutoModelForCausalLM.from_pretrained(str(lm))
    assert len(tok("<i1>", add_special_tokens=False)["input_ids"]) == 1


def test_catalog_sessions_use_catalog_text_only(setup):
    from llmrec.llm.pretrain import catalog_sessions
    from llmrec.llm.prompt import PromptBuilder

    ws, lm = setup
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lm))
    cat = Catalog.from_dataset(ws.dataset)
    b = PromptBuilder("compact", cat, ItemVerbalizer(cat, tok.get_vocab()), tok)
    a = catalog_sessions(cat, b, 5, seed=3)
    assert a == catalog_sessions(cat, b, 5, seed=3) and len(a) == 5
    for text in a:
        assert text.startswith("user unknown") and "candidates" in text and text.endswith("}")


def test_build_lm_is_deterministic(setup, tmp_path):
    ws, lm = setup
    again = tiny_lm(ws, tmp_path / "lm2")
    assert (lm / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()


@pytest.mark.parametrize("mode", MODES)
def test_modes_rank_every_candidate_once(setup, mode):
    ws, lm = setup
    gen = HFBackend.from_pretrained(lm, Catalog.from_dataset(ws.dataset), batch_size=4, top_k=5)
    ctxs = contexts(ws)
    out = gen.rank(ctxs, mode)
    assert [r.user for r in out] == [c.user for c in ctxs]
    for r, c in zip(out, ctxs):
        assert sorted(r.items.tolist()) == sorted(c.candidates.tolist())
        assert len(r.scores) == len(r.items)
    if mode == "constrained":
        assert not any(r.fallback for r in out)
        for r in out:
            assert r.report.valid == 5 and json.loads(r.text)  # always well-formed JSON


@pytest.mark.parametrize("mode", MODES)
def test_batching_does_not_change_results(setup, mode):
    ws, lm = setup
    cat = Catalog.from_dataset(ws.dataset)
    ctxs = contexts(ws, 5)
    one = HFBackend.from_pretrained(lm, cat, batch_size=1, top_k=4).rank(ctxs, mode)
    many = HFBackend.from_pretrained(lm, cat, batch_size=5, top_k=4).rank(ctxs, mode)
    for a, b in zip(one, many):
        assert a.items.tolist() == b.items.tolist()
        if mode == "likelihood":
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scope", ["candidates", "catalog"])
def test_forgotten_items_are_never_produced_even_when_the_model_wants_them(setup, mode, scope):
    ws, lm = setup
    cat = Catalog.from_dataset(ws.dataset)
    gen = HFBackend.from_pretrained(lm, cat, batch_size=3, top_k=6)
    ctxs = contexts(ws, 4)
    banned = np.unique(np.concatenate([c.candidates[:3] for c in ctxs]))
    tokens = torch.as_tensor(gen.verbalizer.token_ids[banned])

    def adore(module, inputs, output):  # the model now strongly prefers the banned items
        output[..., tokens] += 100.0
        return output

    gen.model.get_output_embeddings().register_forward_hook(adore)
    before = gen.rank(ctxs, mode, scope=scope)
    assert any(np.isin(r.items[:3], banned).any() for r in before)  # it really prefers them
    forgotten = np.zeros(ws.dataset.n_items, dtype=bool)
    forgotten[banned] = True
    after = gen.rank(ctxs, mode, forgotten=forgotten, scope=scope)
    for r in after:
        assert not forgotten[r.items].any()
        if r.text is not None:
            assert not any(f"<i{ws.dataset.item_tokens[i]}>" in r.text for i in banned)


def test_multi_token_verbalisation_path(setup):
    """A model whose tokenizer has no item tokens (like any hub LM) spells ids as text."""
    ws, _ = setup
    ds = ws.dataset
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [ds.item_text(i) + " " + str(ds.item_tokens[i]) for i in range(ds.n_items)],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<eos>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(fast),
            n_positions=1024,
            n_embd=32,
            n_layer=1,
            n_head=2,
            bos_token_id=fast.eos_token_id,
            eos_token_id=fast.eos_token_id,
        )
    )
    cat = Catalog.from_dataset(ds)
    gen = HFBackend(model, fast, cat, batch_size=4, top_k=3)
    assert not gen.verbalizer.single_token and gen.builder.template.name == "cragru"
    ctxs = contexts(ws, 2)
    forgotten = np.zeros(ds.n_items, dtype=bool)
    forgotten[ctxs[0].candidates[0]] = True
    for mode in MODES:
        for r, c in zip(gen.rank(ctxs, mode, forgotten=forgotten), ctxs):
            allowed = c.candidates[~forgotten[c.candidates]]
            assert sorted(r.items.tolist()) == sorted(allowed.tolist())
        if mode == "constrained":
            assert all(not r.fallback for r in gen.rank(ctxs, mode, forgotten=forgotten))


def test_verbalizer_lookup():
    from llmrec.data.dataset import Dataset  # noqa: F401  (type only)

    cat = Catalog(("a1", "b2"), ("A", "B"), ("2000", ""), (("Drama",), ()))
    v = ItemVerbalizer(cat, {"<ia1>": 5, "<ib2>": 6})
    assert v.single_token and v(1) == "<ib2>" and v.token_ids.tolist() == [5, 6]
    assert v.lookup("<ia1>") == 0 and v.lookup(" 'b2' ") == 1 and v.lookup("zz") is None
    plain = ItemVerbalizer(cat, {"<ia1>": 5})
    assert not plain.single_token and plain(1) == "b2"
