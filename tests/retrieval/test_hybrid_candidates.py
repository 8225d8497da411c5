"""The hybrid candidate source: EASE's head, the new items nearest in text in its tail; exactly
unlearnable with the store (a forgotten item never appears, incremental equals from scratch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.experiments.cold_items import cold_split
from llmrec.forget import registry as stages
from llmrec.forget import runner
from llmrec.testing.fixtures import small_workspace
from llmrec.workspace import Workspace
from retrieval.hybrid import merge, text_slots
from retrieval.store import RetrievalStore

N = 12  # list length: 9 from EASE, 3 text slots


@pytest.fixture()
def only_retrieval_stage(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", stages.select("retrieval"))


def cold_workspace(root, name="ws-cold") -> Workspace:
    """The small synthetic dataset with 10% of its items moved out of TRAIN and VALID (new
    items: no retained train interaction)."""
    small_workspace(root)
    ws = Workspace(root / name, dataset="syn", data_dir=root / "data", split=cold_split(10, 5))
    assert ws.dataset.n_items == 80  # loaded: workspace.json written
    return ws


def build(ws: Workspace, source: str = "hybrid") -> RetrievalStore:
    return RetrievalStore.build(ws, n_candidates=N, seed=3, n_clusters=4, source=source)


def test_merge_keeps_the_head_adds_new_neighbours_then_fills():
    cf = np.array([5, 4, 3, 2, 1, 0, 9, 8])
    text = np.array([4, 7, 6, -1])
    out = merge(cf, text, 8)
    assert text_slots(8) == 2 and text_slots(3) == 1 and text_slots(20) == 5
    assert out.tolist() == [5, 4, 3, 2, 1, 0, 7, 6]  # 4 is in the head already
    assert merge(cf, np.array([-1, -1]), 8).tolist() == cf.tolist()  # no neighbour: EASE
    assert merge(cf[:3], text, 6).tolist() == [5, 4, 3, 7, -1, -1]  # one slot; padded


def test_hybrid_lists_hold_new_items_in_the_tail_and_ease_in_the_head(tmp_path):
    ws = cold_workspace(tmp_path)
    store = build(ws)
    users = np.arange(ws.dataset.n_users)
    ease = store.candidates(users, N, source="ease")
    hybrid = store.candidates(users, N)
    assert store.source == "hybrid" and np.array_equal(
        hybrid, store.candidates(users, N, source="hybrid")
    )
    head = N - text_slots(N)
    assert np.array_equal(hybrid[:, :head], ease[:, :head])
    new = store.cooccurrence.degree == 0
    assert new.sum() >= 8 and not new[ease[ease >= 0]].any()  # EASE never proposes one
    tail = hybrid[:, head:]
    assert new[tail[tail >= 0]].all() and (tail >= 0).all()
    for u, row in zip(users, hybrid):
        assert len(set(row.tolist())) == N
        assert not np.isin(row, store.history(u)[0]).any()
    # the tail is the new items nearest to the history in the index, in that order
    u = 0
    q = store._unit_vectors[store.history(u)[0]].mean(axis=0)
    sims = store._unit_vectors @ (q / np.linalg.norm(q))
    nearest = np.flatnonzero(new)[np.argsort(-sims[new], kind="stable")][: text_slots(N)]
    assert tail[u].tolist() == nearest.tolist()
    text = store.candidates(users, N, source="text")
    assert not np.array_equal(text, ease) and (text >= 0).all()


def test_forgotten_item_never_appears_and_incremental_equals_scratch(
    tmp_path, only_retrieval_stage
):
    ws = cold_workspace(tmp_path)
    store = build(ws)
    users = np.arange(ws.dataset.n_users)
    before = store.candidates(users)
    head = N - text_slots(N)
    shown = before[:, head:]
    item = int(np.bincount(shown[shown >= 0]).argmax())  # the new item most often in a tail
    ds = ws.dataset
    user = int(np.flatnonzero((before[:, head:] == item).any(axis=1))[0])
    hist = store.history(user)[0][:3]
    runner.forget(
        ws,
        [
            ForgetRequest("item", items=(str(ds.item_tokens[item]),)),
            ForgetRequest(
                "interactions",
                pairs=tuple((str(ds.user_tokens[user]), str(ds.item_tokens[i])) for i in hist),
            ),
        ],
    )
    after = RetrievalStore.load(ws)
    for source in ("hybrid", "text", "ease"):
        got = after.candidates(users, source=source)
        assert not (got == item).any()
    assert after.source == "hybrid"
    scratch_ws = Workspace(
        tmp_path / "scratch", dataset="syn", data_dir=tmp_path / "data", split=cold_split(10, 5)
    )
    with scratch_ws.ledger() as led, ws.ledger() as mine:
        led.record_many([e.request for e in mine.entries()])
    scratch = build(scratch_ws)
    assert after.differences(scratch) == []
    assert np.array_equal(after.candidates(users), scratch.candidates(users))
    assert np.array_equal(
        after.candidates(users, source="text"), scratch.candidates(users, source="text")
    )


def test_hybrid_needs_a_text_encoder(tmp_path):
    ws = cold_workspace(tmp_path)
    with pytest.raises(ValueError, match="text encoder"):
        RetrievalStore.build(
            ws, encoder="cf", n_candidates=N, seed=3, n_clusters=4, source="hybrid"
        )
    with pytest.raises(ValueError, match="candidate source must be one of"):
        RetrievalStore.build(ws, n_candidates=N, seed=3, n_clusters=4, source="bpr")


def test_cli_choice_on_build_and_retrieve_and_one_line_errors(tmp_path, capsys):
    ws = cold_workspace(tmp_path)
    w = ["--workspace", str(ws.root)]
    rc = main(
        [
            "index",
            "build",
            *w,
            "--candidates",
            str(N),
            "--clusters",
            "4",
            "--source",
            "hybrid",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and json.loads(out)["candidate_source"] == "hybrid"
    user = str(ws.dataset.user_tokens[0])
    rc = main(["retrieve", *w, "--user", user, "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["source"] == "hybrid" and len(res["candidates"]) == N
    rc = main(["retrieve", *w, "--user", user, "--source", "ease", "--json"])
    ease = json.loads(capsys.readouterr().out)
    assert rc == 0 and ease["source"] == "ease"
    head = N - text_slots(N)
    assert [c["item"] for c in ease["candidates"][:head]] == [
        c["item"] for c in res["candidates"][:head]
    ]
    for argv in (
        ["retrieve", *w, "--user", user, "--source", "popular"],
        ["index", "build", *w, "--source", "popular"],
        ["index", "build", *w, "--encoder", "cf", "--source", "hybrid"],
    ):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: usage error
            rc = exc.code
        err = capsys.readouterr().err
        assert rc != 0 and len(err.strip().splitlines()) == 1, err
        assert "candidate source" in err or "--source" in err
