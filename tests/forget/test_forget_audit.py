"""Audit power: planting a forgotten record or a stale version in any artifact fails the audit
and names the artifact; a clean workspace after ``llmrec forget`` passes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.data.requests import ForgetRequest
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.workspace import Workspace
from retrieval.encoders import EmbeddingCache
from retrieval.index import ForgetAwareIndex
from retrieval.store import RetrievalStore, manifest_degree
from tests.retrieval.test_retrieval_store import shared_text_cache


@pytest.fixture()
def forgotten_ws(tmp_path, only_retrieval_stage):
    cache, _ = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    RetrievalStore.build(ws, cache_dir=cache)
    forget(ws, [ForgetRequest("item", items=("50",)), ForgetRequest("user", users=("13",))])
    assert run_audit(ws)["ok"], run_audit(ws)["violations"]
    return ws


@pytest.fixture()
def only_retrieval_stage(monkeypatch):
    from llmrec.forget import registry as stages

    monkeypatch.setattr(stages, "STAGES", stages.select("retrieval"))


def _manifest(ws):
    p = RetrievalStore.manifest_path(ws, "retrieval")
    return p, json.loads(p.read_text())


def _violations(ws) -> list[dict]:
    res = run_audit(ws)
    assert not res["ok"]
    return res["violations"]


def test_forgotten_item_back_in_index(forgotten_ws):
    ws = forgotten_ws
    p, man = _manifest(ws)
    idx_manifest = p.parent / f"{man['files']['index']}.json"
    index = ForgetAwareIndex.load(idx_manifest)
    item = ws.dataset.item_index("50")
    index.add(np.zeros((1, index.dim), dtype=np.float32), np.array([item]))
    index.save(p.parent / man["files"]["index"])
    v = _violations(ws)
    assert any(
        f["artifact"] == "retrieval:retrieval"
        and "index holds forgotten item(s) 50" in f["problem"]
        for f in v
    )


def test_forgotten_interaction_back_in_counts(forgotten_ws):
    ws = forgotten_ws
    p, man = _manifest(ws)
    counts = np.load(p.parent / man["files"]["counts"], mmap_mode="r+")
    counts[0, 1] += 1  # as if a forgotten co-occurrence had not been decremented
    counts.flush()
    del counts
    v = _violations(ws)
    assert any("co-occurrence counts differ" in f["problem"] for f in v)


def test_forgotten_item_degree_back_in_manifest(forgotten_ws):
    ws = forgotten_ws
    p, man = _manifest(ws)
    degree = manifest_degree(man["stats"]).copy()
    degree[ws.dataset.item_index("50")] = 7  # the forgotten item counted again
    man["stats"]["degree_b64"] = base64.b64encode(degree.astype("<i8").tobytes()).decode()
    p.write_text(json.dumps(man))
    v = _violations(ws)
    assert any(
        f["artifact"] == "retrieval:retrieval" and "item degrees differ" in f["problem"] for f in v
    )


def test_old_embedding_cache_entry(forgotten_ws):
    ws = forgotten_ws
    _, man = _manifest(ws)
    current = Path(man["files"]["embeddings"])
    dim = EmbeddingCache._read(current)["items"].shape[1]
    planted = current.with_name("planted__x__v0.npz")  # an entry that was never purged
    ids = np.arange(ws.dataset.n_items)
    np.savez(planted, ids=ids, items=np.zeros((len(ids), dim), dtype=np.float32))
    v = _violations(ws)
    assert any(
        "embedding cache entry covers forgotten item(s)" in f["problem"]
        and f["path"] == str(planted)
        for f in v
    )


def test_stale_store_version(forgotten_ws):
    ws = forgotten_ws
    with ws.ledger() as led:  # a request recorded but never applied (no stage run)
        led.record(ForgetRequest("item", items=("51",)), stages=["retrieval"])
    v = _violations(ws)
    names = {f["artifact"] for f in v}
    assert "stage:retrieval" in names
    assert any(
        f["artifact"] == "retrieval:retrieval" and f["problem"].startswith("stale") for f in v
    )
