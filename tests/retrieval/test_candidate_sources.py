"""Candidate sources: exact ones equal a build from scratch after a forget; the reference's
original-model sources are marked leaky and fail the forget audit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.data.requests import ForgetRequest
from llmrec.forget import registry as stages
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.workspace import Workspace
from retrieval import sources

FAST = {"epochs": 3, "dim": 8}


@pytest.fixture()
def source_stage(monkeypatch):
    """Only the candidate-source stage runs (and is audited)."""
    monkeypatch.setattr(stages, "STAGES", stages.select("candidate-source"))


def _ws(root, tiny_dir) -> Workspace:
    return Workspace(root, dataset="tiny", data_dir=tiny_dir)


REQUEST = ForgetRequest(
    "interactions", pairs=(("u1", "i1"), ("u1", "i3"), ("u4", "i1"), ("u4", "i3"))
)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_retrained_source_equals_scratch_after_forget(tmp_path, tiny_dir, source_stage, name):
    ws = _ws(tmp_path / "ws", tiny_dir)
    before = sources.build_source(ws, name, seed=7, params=FAST)
    out = forget(ws, [REQUEST])
    stage = out["stages"][sources.KIND]["sources"][name]
    assert stage["retrained"] and stage["seconds"] >= 0
    after = sources.load_source(ws, name)
    assert after.trained_version == ws.view().version == 1
    # from scratch: a fresh workspace holding the same request
    fresh = _ws(tmp_path / "fresh", tiny_dir)
    with fresh.ledger() as led:
        led.record(REQUEST)
    scratch = sources.build_source(fresh, name, seed=7, params=FAST, save=False)
    assert _same_weights(after.model, scratch.model)
    assert not _same_weights(after.model, before.model)
    users = np.arange(ws.dataset.n_users)
    assert np.array_equal(after.candidates(users, 4), scratch.candidates(users, 4))
    # forgotten pairs are not blocked any more, the retained ones are
    u1 = ws.dataset.user_index("u1")
    assert ws.dataset.item_index("i1") not in after.train_rows()[u1]
    assert run_audit(ws)["ok"], run_audit(ws)["violations"]
    assert after.describe()["exact"] and "note" not in after.describe()


def test_ease_source_equals_scratch_after_forget(tmp_path, tiny_dir, monkeypatch):
    from retrieval.store import RetrievalStore

    monkeypatch.setattr(stages, "STAGES", stages.select("retrieval"))
    kw = {"encoder": "cf", "n_candidates": 4, "n_clusters": 2, "cf_params": FAST}
    ws = _ws(tmp_path / "ws", tiny_dir)
    RetrievalStore.build(ws, **kw)
    forget(ws, [REQUEST])
    fresh = _ws(tmp_path / "fresh", tiny_dir)
    with fresh.ledger() as led:
        led.record(REQUEST)
    RetrievalStore.build(fresh, **kw)
    a, b = sources.load_source(ws, "ease"), sources.load_source(fresh, "ease")
    users = np.arange(ws.dataset.n_users)
    assert a.trained_version == b.trained_version == 1
    assert np.array_equal(a.scores(users), b.scores(users))
    assert np.array_equal(a.candidates(users, 4), b.candidates(users, 4))
    assert np.array_equal(a.candidates(users, 4), a.store.candidates(users, 4))


@pytest.mark.parametrize("name", ["bpr-original", "lightgcn-original"])
def test_original_source_is_leaky_and_fails_audit(tmp_path, tiny_dir, source_stage, name, capsys):
    ws = _ws(tmp_path / "ws", tiny_dir)
    src = sources.build_source(ws, name, seed=7, params=FAST)
    assert run_audit(ws)["ok"]  # nothing forgotten yet: nothing leaks
    assert not src.includes_forgotten_data
    out = forget(ws, [REQUEST])
    assert out["stages"][sources.KIND]["sources"][name]["note"] == sources.LEAK_NOTE
    served = sources.load_source(ws, name)
    assert served.trained_version == 0 and served.includes_forgotten_data
    assert served.describe()["note"] == sources.LEAK_NOTE
    assert sources.LEAK_NOTE in served.label()
    assert _same_weights(served.model, src.model)  # never updated
    res = run_audit(ws)
    assert not res["ok"]
    hits = [v for v in res["violations"] if v["artifact"] == f"{sources.KIND}:{name}"]
    assert hits and sources.LEAK_NOTE in hits[0]["problem"]
    # the command line reports it and exits 1
    from llmrec.cli.main import main

    assert main(["audit", "--workspace", str(ws.root)]) == 1
    assert sources.LEAK_NOTE in capsys.readouterr().out
    # its candidates still never propose a forgotten item or a retained train item
    cands = served.candidates(np.arange(ws.dataset.n_users), 3)
    for u, row in enumerate(cands):
        assert not set(row[row >= 0]) & set(served.train_rows()[u])


def test_stale_exact_source_fails_audit(tmp_path, tiny_dir, source_stage, monkeypatch):
    ws = _ws(tmp_path / "ws", tiny_dir)
    sources.build_source(ws, "bpr", seed=7, params=FAST)
    monkeypatch.setattr(stages, "STAGES", ())  # the stage never runs
    forget(ws, [REQUEST])
    monkeypatch.setattr(stages, "STAGES", stages.select("candidate-source"))
    res = run_audit(ws)
    assert any("stale" in v["problem"] for v in res["violations"])
    with pytest.raises(Exception, match="reflects ledger v0"):
        sources.load_source(ws, "bpr")


def test_unknown_source(tmp_path, tiny_dir):
    with pytest.raises(ValueError, match="candidate source must be one of"):
        sources.build_source(_ws(tmp_path / "ws", tiny_dir), "itemknn")
