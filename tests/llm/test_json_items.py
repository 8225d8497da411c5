"""json mode with single-token ids writes only candidates it has not written yet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.llm.backends.hf import HFBackend, _CandidateItems
from llmrec.llm.catalog import Catalog
from llmrec.llm.parsing import extract_entries
from llmrec.llm.prompt import UserContext
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm


def test_processor_bans_other_items_and_written_candidates_only():
    items = np.array([10, 11, 12, 13])  # item tokens; 0..9 are text
    proc = _CandidateItems(items, [np.array([11, 12]), np.array([13])], prompt_width=2, vocab=14)
    first = proc(torch.tensor([[5, 6], [5, 6]]), torch.zeros(2, 14))
    assert torch.isinf(first[0, [10, 13]]).all() and (first[0, [11, 12]] == 0).all()
    ids = torch.tensor([[5, 6, 11, 3], [5, 6, 4, 3]])  # row 0 has written item 11 since
    out = proc(ids, torch.zeros(2, 14))
    assert torch.isinf(out[0, [10, 11, 13]]).all() and out[0, 12] == 0
    assert torch.isinf(out[1, [10, 11, 12]]).all() and out[1, 13] == 0
    assert (out[:, :10] == 0).all()  # the JSON text is untouched


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("jsonitems")
    ws = small_workspace(root)
    return ws, tiny_lm(ws, root / "lm")


def test_json_answers_name_only_unwritten_non_forgotten_candidates(setup):
    ws, lm = setup
    ds = ws.dataset
    cat = Catalog.from_dataset(ds)
    rng = np.random.default_rng(1)
    ctxs = [
        UserContext(u, {}, np.arange(3), np.full(3, 4.0), rng.permutation(np.arange(3, 80))[:8])
        for u in range(6)
    ]
    forgotten = np.zeros(ds.n_items, bool)
    forgotten[ctxs[0].candidates[:2]] = True
    gen = HFBackend.from_pretrained(lm, cat, batch_size=3, top_k=5)
    for r, c in zip(gen.rank(ctxs, "json", forgotten=forgotten), ctxs):
        keys = [gen.verbalizer.lookup(k) for k, _ in extract_entries(r.text)[0]]
        keys = [k for k in keys if k is not None]  # free text keys are the model's (unknown)
        allowed = set(c.candidates[~forgotten[c.candidates]].tolist())
        assert set(keys) <= allowed and len(keys) == len(set(keys))
        assert r.report.not_candidate == r.report.duplicate == r.report.forgotten == 0
        assert set(r.items.tolist()) == allowed
    free = HFBackend.from_pretrained(lm, cat, batch_size=3, top_k=5, json_items="free")
    for r in free.rank(ctxs, "json", forgotten=forgotten):
        assert not forgotten[r.items].any()
    with pytest.raises(ValueError):
        HFBackend.from_pretrained(lm, cat, json_items="any")
