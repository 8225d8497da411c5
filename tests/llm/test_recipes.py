"""The named MiniLM recipes: ``fast`` (the default: 1 epoch, answers of held-out items) and
``quality`` (3 epochs, candidate-list answers with the listwise loss); one spelling everywhere."""

from __future__ import annotations

import json

import pytest

from llmrec.cli.llm import RECIPE_NAMES
from llmrec.llm.recipe import DEFAULT_RECIPE, RECIPES, example_settings, lora_settings


@pytest.fixture()
def minilm_dir(tmp_path):
    """A folder whose manifest says 'built from MiniLM' (all the recipe reads besides n_layer)."""
    (tmp_path / "llmrec_lm.json").write_text(json.dumps({"init": "minilm", "template": "t"}))
    return tmp_path


def test_cli_spells_the_recipes_as_the_library():
    assert RECIPE_NAMES == RECIPES and RECIPE_NAMES[0] == DEFAULT_RECIPE == "fast"


def test_fast_and_quality_differ_only_where_documented(minilm_dir):
    fast = lora_settings(minilm_dir, n_layer=2)
    quality = lora_settings(minilm_dir, n_layer=2, recipe="quality")
    assert (fast.epochs, fast.list_weight) == (1, 0.0)
    assert (quality.epochs, quality.list_weight) == (3, 1.0)
    assert fast.target_modules == quality.target_modules and fast.lr == quality.lr
    assert lora_settings(minilm_dir, epochs=2, n_layer=2, recipe="quality").epochs == 2
    assert not example_settings(minilm_dir).answer_fill
    assert example_settings(minilm_dir, "quality").answer_fill


def test_unknown_recipe_is_refused(minilm_dir):
    with pytest.raises(ValueError, match="unknown recipe 'slow'"):
        lora_settings(minilm_dir, n_layer=2, recipe="slow")
