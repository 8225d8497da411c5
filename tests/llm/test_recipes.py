"""The named MiniLM recipes: ``quality`` (the default: 3 epochs, candidate-list answers with the
listwise loss) and ``fast`` (1 epoch, answers of held-out items, what ``llmrec compare`` tunes
with); one spelling everywhere."""

from __future__ import annotations

import json

import pytest

from llmrec.cli.llm import RECIPE_NAMES
from llmrec.llm.recipe import DEFAULT_RECIPE, RECIPES, example_settings, lora_settings
from scripts.run_cragru import build_parser


@pytest.fixture()
def minilm_dir(tmp_path):
    """A folder whose manifest says 'built from MiniLM' (all the recipe reads besides n_layer)."""
    (tmp_path / "llmrec_lm.json").write_text(json.dumps({"init": "minilm", "template": "t"}))
    return tmp_path


def test_cli_spells_the_recipes_as_the_library():
    assert RECIPE_NAMES == RECIPES and RECIPE_NAMES[0] == DEFAULT_RECIPE == "quality"


def test_default_path_and_compare_use_their_documented_recipes():
    from llmrec.experiments.cragru_scenario import ScenarioConfig
    from llmrec.llm.recipe import COMPARE_RECIPE

    assert ScenarioConfig().recipe == DEFAULT_RECIPE
    assert build_parser().parse_args([]).recipe == DEFAULT_RECIPE
    assert COMPARE_RECIPE == "fast"


def test_compare_tunes_with_the_compare_recipe(minilm_dir, monkeypatch):
    import llmrec.llm.adapters as adapters
    import retrieval.store as store
    from llmrec.experiments.compare.llm import build_llm_path

    seen = []
    monkeypatch.setattr(store.RetrievalStore, "build", staticmethod(lambda *a, **k: None))
    monkeypatch.setattr(adapters, "tune_adapters", lambda ws, cfg: seen.append(cfg))
    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", lambda *_: _Layers())
    build_llm_path(None, minilm_dir, seed=0)
    (cfg,) = seen
    assert (cfg.lora.epochs, cfg.lora.list_weight, cfg.n_shards) == (1, 0.0, 4)
    assert not cfg.examples.answer_fill


class _Layers:
    num_hidden_layers = 2


def test_fast_and_quality_differ_only_where_documented(minilm_dir):
    fast = lora_settings(minilm_dir, n_layer=2, recipe="fast")
    quality = lora_settings(minilm_dir, n_layer=2)
    assert (fast.epochs, fast.list_weight) == (1, 0.0)
    assert (quality.epochs, quality.list_weight) == (3, 1.0)
    assert fast.target_modules == quality.target_modules and fast.lr == quality.lr
    assert lora_settings(minilm_dir, epochs=2, n_layer=2, recipe="quality").epochs == 2
    assert example_settings(minilm_dir).answer_fill
    assert not example_settings(minilm_dir, "fast").answer_fill


def test_unknown_recipe_is_refused(minilm_dir):
    with pytest.raises(ValueError, match="unknown recipe 'slow'"):
        lora_settings(minilm_dir, n_layer=2, recipe="slow")
