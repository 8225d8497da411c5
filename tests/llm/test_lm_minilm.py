"""The default base LM starts from the packaged MiniLM: a plain HF causal LM, catalogue-only
corpus, item tokens initialised from the item text, and the recipe that tunes and serves it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertLMHeadModel

from llmrec.llm.catalog import item_token
from llmrec.llm.lm_builder import LMConfig, build_lm, preferred_template
from llmrec.testing.fixtures import small_workspace

TINY_MINILM = LMConfig(init="minilm", n_layer=1, n_positions=192, block_size=192, sessions=12)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("minilm")
    ws = small_workspace(root)
    out = root / "lm"
    man = build_lm(ws.dataset, out, TINY_MINILM, seed=3)
    return ws, out, man


def test_minilm_build_is_a_plain_hf_causal_lm(built):
    ws, out, man = built
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(model, BertLMHeadModel) and model.config.is_decoder
    assert model.config.num_hidden_layers == 1 and model.config.max_position_embeddings == 192
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    assert man["init"] == "minilm" and man["holds_user_data"] is False
    assert preferred_template(out) == "cragru-mini"
    ids = tok("history <i1> 5", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and ids[1] == tok.convert_tokens_to_ids("<i1>")
    # BOS only: a prompt never ends in [SEP]
    assert tok("a b")["input_ids"][0] == tok.bos_token_id
    assert tok("a b")["input_ids"][-1] != tok.eos_token_id
    # reloading gives the trained weights exactly (head bias and transform included)
    x = torch.tensor([ids])
    again = AutoModelForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, again(input_ids=x).logits)


def test_pruned_vocabulary_spells_any_text_without_unk(built):
    """The vocabulary is cut to catalogue/template pieces, common words and characters: any
    other text is spelled with kept pieces (an [UNK] only where MiniLM's own tokenizer has
    one) and reads back the same; the head is as wide as the vocabulary."""
    from llmrec.llm.minilm import minilm_path

    ws, out, _ = built
    tok = AutoTokenizer.from_pretrained(str(out))
    full = AutoTokenizer.from_pretrained(str(minilm_path()))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert len(tok) < 12000 and model.get_output_embeddings().weight.shape[0] == len(tok)
    for text in ("occupation technician, zip code 55414", "Straße naïve", "xqzvw 東京"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ref = full(text, add_special_tokens=False)["input_ids"]
        assert ids.count(tok.unk_token_id) == ref.count(full.unk_token_id)
        assert tok.decode(ids) == full.decode(ref) and max(ids) < len(tok)


def test_minilm_keeps_pretrained_language_knowledge(built):
    """The lower layers and word embeddings are MiniLM's: before adaptation a word's row is
    the pretrained row, and after the (short) adaptation it has moved little."""
    from llmrec.llm.minilm import minilm_path

    ws, out, _ = built
    pre = AutoModelForCausalLM.from_pretrained(str(minilm_path()))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    w = tok.convert_tokens_to_ids("comedy")
    a = pre.get_input_embeddings().weight[w]
    b = model.get_input_embeddings().weight[w]
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9


def test_item_tokens_start_from_their_text():
    """Items whose texts are alike start with alike rows (through the pretrained encoder)."""
    from llmrec.llm.minilm import minilm_decoder, minilm_tokenizer

    items = [item_token(t) for t in ("1", "2", "3")]
    texts = ["Star Wars (1977) | Sci-Fi", "Return of the Jedi (1983) | Sci-Fi", "Babe (1995)"]
    tok = minilm_tokenizer(items, 64)
    model = minilm_decoder(tok, items, texts, n_layer=1, n_positions=64)
    ids = tok.convert_tokens_to_ids(items)
    rows = model.get_input_embeddings().weight[ids]
    cos = torch.nn.functional.cosine_similarity
    assert cos(rows[0], rows[1], dim=0) > cos(rows[0], rows[2], dim=0)
    norm = model.get_input_embeddings().weight[: min(ids)].norm(dim=1).mean()
    assert torch.allclose(rows.norm(dim=1), norm.expand(3), rtol=1e-3)


class CatalogueOnly:
    """A dataset that raises on any access to interactions, ratings or users."""

    FORBIDDEN = ("inter_", "rating", "timestamp", "user", "n_users", "n_inter", "pair_keys")

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        if name.startswith(self.FORBIDDEN) or name == "interactions_frame":
            raise AssertionError(f"build_lm read user data: {name}")
        return getattr(self._ds, name)


def test_minilm_corpus_is_catalogue_only(built, tmp_path):
    """Nothing of a user reaches the base model: the build never reads an interaction, rating
    or profile, and gives the same weights as the build from the full dataset."""
    ws, out, man = built
    man2 = build_lm(CatalogueOnly(ws.dataset), tmp_path / "lm2", TINY_MINILM, seed=3)
    assert man2["corpus_sha256"] == man["corpus_sha256"]
    assert man2["weights_sha256"] == man["weights_sha256"]


def test_bad_minilm_settings_are_clear_errors(tmp_path):
    from llmrec.errors import ArtifactError

    ws = small_workspace(tmp_path)
    with pytest.raises(ArtifactError, match="layers"):
        build_lm(ws.dataset, tmp_path / "x", LMConfig(init="minilm", n_layer=9))
    with pytest.raises(ArtifactError, match="init"):
        build_lm(ws.dataset, tmp_path / "x", LMConfig(init="gpt5"))
    assert not (tmp_path / "x").exists()


def test_recipe_tunes_and_serves_the_minilm_model(built, tmp_path):
    """Adapters from the MiniLM recipe: output-only item rows, LoRA on the top layer; the
    served ranking covers the candidates and json answers parse."""
    from llmrec.llm.adapters import AdapterConfig, tune_adapters
    from llmrec.llm.recipe import example_settings, lora_settings, serving
    from llmrec.serving.cragru import CragruOptions, CragruPipeline
    from retrieval.store import RetrievalStore

    ws, out, _ = built
    RetrievalStore.build(ws, encoder="text", n_candidates=20, seed=1)
    s = serving(out)
    lora = lora_settings(out, epochs=1)
    assert lora.item_token_layers == "output" and not lora.zero_residual
    cfg = AdapterConfig(
        base=str(out.resolve()),
        n_shards=2,
        seed=5,
        template=s.template,
        lora=lora,
        examples=replace(example_settings(out), history=10, n_candidates=10),
    )
    rep = tune_adapters(ws, cfg)
    assert rep["retuned"] == [0, 1]
    saved = json.loads((ws.root / "artifacts/adapters/shard-000/adapter_config.json").read_text())
    tokens = saved["trainable_token_indices"]
    assert list(tokens) == ["decoder"]  # the head's item rows only
    opts = CragruOptions(
        model=str(out.resolve()),
        template=s.template,
        history=s.history,
        n_candidates=10,
    )
    pipe = CragruPipeline(ws, opts)
    users = np.arange(4)
    for mode in ("likelihood", "json"):
        ranked = pipe.recommend(users, mode)
        for r in ranked:
            cands = pipe.context(r.user).candidates
            assert set(r.items.tolist()) <= set(cands.tolist()) and len(r.items) == len(cands)
