"""Every candidate source and every history strategy (dp included) through ``llmrec index
build``, ``llmrec retrieve`` and ``llmrec recommend``, under the forget guarantee."""

from __future__ import annotations

import json

import pytest

from llmrec.cli.main import main
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm
from retrieval.strategies import ALL_STRATEGIES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small workspace with the store, an exact bpr source and a leaky bpr-original one."""
    root = tmp_path_factory.mktemp("sources")
    ws = small_workspace(root)
    assert ws.dataset.n_users == 60  # writes workspace.json: the CLI opens the same dataset
    w = ["--workspace", str(ws.root), "--quiet"]
    for source in ("bpr", "bpr-original"):
        argv = ["index", "build", "--encoder", "cf", "--clusters", "4", "--source", source]
        assert main([*argv, "--candidates", "20", *w]) == 0
    return ws, w


def _retrieve(capsys, w, user, *extra):
    assert main(["retrieve", "--user", user, "--json", *w, *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_every_strategy_from_every_source(built, capsys, strategy):
    ws, w = built
    user = str(ws.dataset.user_tokens[2])
    for source in ("ease", "bpr"):
        res = _retrieve(capsys, w, user, "--strategy", strategy, "--source", source, "--H", "5")
        assert res["strategy"] == strategy and res["source"] == source
        assert len(res["history"]) <= 5 and len(res["candidates"]) == 20
    ease = _retrieve(capsys, w, user, "--H", "5")["candidates"]
    bpr = _retrieve(capsys, w, user, "--H", "5", "--source", "bpr")["candidates"]
    assert [c["item"] for c in ease] != [c["item"] for c in bpr]  # another source's list


def test_sources_after_a_forget(built, tmp_path, capsys):
    """The exact source is retrained and never proposes a forgotten item; the leaky one is
    named as leaking by retrieve and by the audit."""
    ws, w = built
    item = str(ws.dataset.item_tokens[0])
    req = tmp_path / "item.jsonl"
    req.write_text(json.dumps({"kind": "item", "items": [item]}) + "\n")
    assert main(["forget", "--request", str(req), *w]) == 0
    capsys.readouterr()
    for user in ws.dataset.user_tokens[:10]:
        for strategy in ("dp", "preference"):
            res = _retrieve(capsys, w, str(user), "--source", "bpr", "--strategy", strategy)
            assert item not in {c["item"] for c in res["candidates"]}
            assert item not in {h["item"] for h in res["history"]} and "note" not in res
    res = _retrieve(capsys, w, str(ws.dataset.user_tokens[0]), "--source", "bpr-original")
    assert "includes forgotten data" in res["note"]
    assert main(["audit", *w]) == 1  # the leaky source is a violation after a forget
    assert "bpr-original" in capsys.readouterr().out


def test_recommend_with_a_source_and_dp(tmp_path, capsys):
    ws = small_workspace(tmp_path)
    assert ws.dataset.n_users == 60
    w = ["--workspace", str(ws.root), "--quiet"]
    argv = ["index", "build", "--encoder", "cf", "--clusters", "4", "--source", "bpr"]
    assert main([*argv, *w]) == 0
    tiny_lm(ws, ws.root / "artifacts" / "lm")
    capsys.readouterr()
    user = str(ws.dataset.user_tokens[1])
    argv = ["recommend", "--user", user, "--strategy", "dp", "--source", "bpr", "--json"]
    assert main([*argv, *w]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["strategy"], res["source"]) == ("dp", "bpr") and len(res["items"]) == 10
    cands = _retrieve(capsys, w, user, "--source", "bpr", "--strategy", "dp")["candidates"]
    assert set(res["items"]) <= {c["item"] for c in cands} | set(res["candidates"])
