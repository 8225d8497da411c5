"""The shared test builders of :mod:`llmrec.testing` (a small workspace, a tiny base LM, an
adapter configuration) are deterministic and agree with the LM recipe."""

from __future__ import annotations

import numpy as np

from llmrec.llm.lm_builder import build_lm
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import TINY_LM, adapter_config


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
