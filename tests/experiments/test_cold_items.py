"""The cold-item scenario: the split that moves items out of TRAIN and VALID, and the table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.data.split import TEST, TRAIN, VALID, make_split, select_cold_items
from llmrec.errors import LlmrecError
from llmrec.experiments.cold_items import (
    ColdItemsConfig,
    cold_split,
    format_cold_items,
    parse_spec,
    run_cold_items,
)
from llmrec.llm.adapters import tune_adapters
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore


def test_cold_split_moves_the_chosen_items_to_test_and_nothing_else(tmp_path):
    ds = small_workspace(tmp_path).dataset
    plain = make_split(ds, "random", 5)
    cold_split_ = make_split(ds, "random", 5, cold_items=10)
    items = select_cold_items(ds, 10, 5)
    count = np.bincount(ds.inter_item, minlength=ds.n_items)
    assert len(items) == 8 and (count[items] <= np.median(count)).all()
    on_cold = np.isin(ds.inter_item, items)
    assert (cold_split_.part[on_cold] == TEST).all()
    assert np.array_equal(cold_split_.part[~on_cold], plain.part[~on_cold])
    assert not np.isin(items, ds.inter_item[cold_split_.part != TEST]).any()
    assert np.array_equal(items, select_cold_items(ds, 10, 5))  # seeded
    assert not np.array_equal(items, select_cold_items(ds, 10, 6))
    assert cold_split_.config()["cold_items"] == 10 and "cold_items" not in plain.config()
    assert {TRAIN, VALID} <= set(np.unique(cold_split_.part).tolist())


def test_workspace_keeps_its_cold_split_and_rejects_a_bad_one(tmp_path):
    small_workspace(tmp_path)
    data = tmp_path / "data"
    ws = Workspace(tmp_path / "c", dataset="syn", data_dir=data, split=cold_split(10, 5))
    part = ws.split.part
    again = Workspace(tmp_path / "c")
    assert again.split.cold_items == 10 and np.array_equal(again.split.part, part)
    with pytest.raises(LlmrecError, match="uses split"):
        Workspace(tmp_path / "c", split=cold_split(20, 5))
    cfg = json.loads((tmp_path / "c" / "workspace.json").read_text())
    cfg["split"]["cold_items"] = "many"
    (tmp_path / "c" / "workspace.json").write_text(json.dumps(cfg))
    with pytest.raises(LlmrecError, match="cold_items"):
        Workspace(tmp_path / "c")


@pytest.mark.parametrize("bad", ["cold-items", "cold-items:0", "cold-items:101", "cold:5"])
def test_bad_spec_is_one_clear_error(bad):
    with pytest.raises(LlmrecError, match="cold-items:P"):
        parse_spec(bad)
    assert parse_spec("cold-items:12.5") == parse_spec("cold-items:12.5%") == 12.5


def test_scenario_table_on_a_small_workspace(tmp_path):
    small_workspace(tmp_path)
    ws = Workspace(
        tmp_path / "cold", dataset="syn", data_dir=tmp_path / "data", split=cold_split(20, 5)
    )
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="text", n_candidates=20, seed=3, n_clusters=4)
    tune_adapters(ws, adapter_config(lm.resolve()))
    with pytest.raises(LlmrecError, match="fresh --workspace"):
        run_cold_items(ws, ColdItemsConfig(percent=10))
    s = run_cold_items(ws, ColdItemsConfig(percent=20, seed=3, blend_grid=(0.0, 2.0)))
    assert set(s["methods"]) == {"ease", "text", "hybrid", "cragru-zeroshot", "cragru"}
    # EASE never proposes an item without train interactions: 0 on the cold pairs
    assert s["methods"]["ease"]["cold"]["recall@10"] == 0.0
    assert s["test_pairs"]["cold"] > 0 and s["cold_items"] == 16
    for m in ("cragru-zeroshot", "cragru"):
        p = s["paired"][m]
        d = p["cold_recall_vs_ease"]
        assert d["mean_diff"] == pytest.approx(
            s["methods"][m]["cold"]["recall@10"] - s["methods"]["ease"]["cold"]["recall@10"]
        )
        assert d["n_users"] == s["methods"][m]["cold"]["n_users"]
        assert s["blend"][m]["blend"] in (0.0, 2.0)
    text = format_cold_items(s)
    assert "cold R@10" in text and "cragru-zeroshot" in text and "text alone" in text
    assert (ws.root / s["run_dir"].split(str(ws.root) + "/")[-1] / "results.json").is_file()


def test_recommend_serves_the_candidate_source_asked_for(tmp_path, capsys):
    from llmrec.cli.main import main

    small_workspace(tmp_path)
    ws = Workspace(
        tmp_path / "cold", dataset="syn", data_dir=tmp_path / "data", split=cold_split(20, 5)
    )
    tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="text", n_candidates=20, seed=3, n_clusters=4)
    new = set(ws.dataset.item_tokens[select_cold_items(ws.dataset, 20, 5)].tolist())
    user = str(ws.dataset.user_tokens[0])
    got = {}
    for source in ("ease", "hybrid"):
        argv = ["recommend", "--workspace", str(ws.root), "--user", user, "--no-adapters"]
        rc = main([*argv, "--candidates", "8", "--source", source, "--json"])
        got[source] = json.loads(capsys.readouterr().out)
        assert rc == 0 and got[source]["source"] == source
    assert not new & set(got["ease"]["candidates"])
    assert new & set(got["hybrid"]["candidates"][6:])  # 2 text slots of 8 hold new items
    assert got["hybrid"]["candidates"][:6] == got["ease"]["candidates"][:6]
