"""retrain-gold benchmark helpers: the RecBole split files and the side-venv lookup."""

from __future__ import annotations

import numpy as np

from llmrec.testing.fixtures import small_workspace
from scripts.benchmarks import retrain_gold


def test_split_files_hold_the_given_pairs_as_tokens(tmp_path):
    ds = small_workspace(tmp_path).dataset
    u, i = ds.inter_user[:5], ds.inter_item[:5]
    retrain_gold.write_split(tmp_path / "rb", "r", ds, {"train": (u, i), "test": (u[:2], i[:2])})
    lines = (tmp_path / "rb/r/r.train.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token" and len(lines) == 6
    assert lines[1] == f"{ds.user_tokens[u[0]]}\t{ds.item_tokens[i[0]]}"
    assert len((tmp_path / "rb/r/r.test.inter").read_text().splitlines()) == 3


def test_side_venv_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMREC_RECBOLE_PYTHON", raising=False)
    monkeypatch.setattr(retrain_gold, "REPO", tmp_path)
    assert retrain_gold.recbole_python(None) is None
    fake = tmp_path / "py"
    fake.write_text("")
    monkeypatch.setenv("LLMREC_RECBOLE_PYTHON", str(fake))
    assert retrain_gold.recbole_python(None) == str(fake)
    assert retrain_gold.recbole_python(str(tmp_path / "missing")) == str(fake)
    assert np.isclose(retrain_gold.STORED_RECBOLE["core:5%users"]["ndcg@10"], 0.2619)
