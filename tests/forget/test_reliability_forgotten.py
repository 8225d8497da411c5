"""One meaning of "forgotten" from serving to audit (docs/design.md §2.3).

Under the default ``retrain`` policy a forgotten interaction's item may be served to its user
again exactly when a from-scratch build would: lists served after the request are legitimate,
lists served before it hold forgotten data and are scrubbed. Under ``suppress`` the item is never
shown to that user again: the store's candidate lists (every ranking is drawn from them) drop it
and the audit flags any list that shows it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.serving import served_log as served
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore


@pytest.fixture()
def ws(tmp_path, tiny_dir):
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    RetrievalStore.build(ws, encoder="cf", n_candidates=8, seed=3, n_clusters=2)
    return ws


def _train_pair(ws: Workspace) -> tuple[str, str]:
    """A (user, item) train interaction whose item a from-scratch build may offer again."""
    store = RetrievalStore.load(ws)
    ds = ws.dataset
    items, _ = store.history(1)
    return str(ds.user_tokens[1]), str(ds.item_tokens[items[0]])


def _serve(ws: Workspace, user: str) -> list[str]:
    """What serving shows: the store's candidates (rankings are permutations of them)."""
    ds = ws.dataset
    store = RetrievalStore.load(ws)
    cands = store.candidates(np.array([ds.user_index(user)]))[0]
    items = [str(ds.item_tokens[i]) for i in cands if i >= 0]
    served.log_served(ws, user, items, store.ledger_version, "test")
    return items


def test_retrain_policy_new_lists_are_legitimate_old_ones_scrubbed(ws):
    user, item = _train_pair(ws)
    # served before the request: the item was in the user's history, so a list showing it
    # (planted: e.g. from another path) holds the forgotten interaction
    served.log_served(ws, user, [item], 0, "test")
    forget(ws, [ForgetRequest("interactions", pairs=((user, item),))])
    assert [e["items"] for e in served.read_log(ws)] == [[]]  # the old entry was scrubbed
    shown = _serve(ws, user)
    assert item in shown  # a from-scratch build on the retained data offers it again
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    # the same list claiming to predate the request (planted in the file) is a violation
    with open(served.log_path(ws), "a") as fh:
        fh.write(json.dumps({"user": user, "items": [item], "ledger_version": 0}) + "\n")
    problems = [v["problem"] for v in run_audit(ws)["violations"]]
    assert any("before its request v1" in p for p in problems), problems


def test_suppress_policy_never_serves_and_audit_checks(ws, capsys):
    user, item = _train_pair(ws)
    forget(ws, [ForgetRequest("interactions", pairs=((user, item),))])
    served.log_served(ws, user, [item], 1, "test")  # legitimate under retrain
    assert run_audit(ws)["ok"]
    argv = ["forget", "--workspace", str(ws.root), "--policy", "suppress", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "suppress"
    assert json.loads((ws.root / "workspace.json").read_text())["forget_policy"] == "suppress"
    assert served.read_log(ws)[0]["items"] == []  # scrubbed to the stricter policy
    ws = Workspace(ws.root)
    assert item not in _serve(ws, user)
    assert run_audit(ws)["ok"]
    served.log_served(ws, user, [item], 1, "test")
    problems = [v["problem"] for v in run_audit(ws)["violations"]]
    assert any("policy suppress" in p for p in problems), problems
    # the filter serving code can call on any list it shows
    ds = ws.dataset
    kept = served.suppress_filter(
        ws, ws.view(), ds.user_index(user), np.array([ds.item_index(item), 0])
    )
    assert ds.item_index(item) not in kept


def test_forget_during_serving_is_scrubbed_on_write(ws):
    """A list computed at v0 but logged after a request was applied is scrubbed as it is
    written (it predates the request)."""
    user, item = _train_pair(ws)
    forget(ws, [ForgetRequest("interactions", pairs=((user, item),))])
    served.log_served(ws, user, [item, "i0"], 0, "test")
    assert served.read_log(ws)[0]["items"] == ["i0"]
    assert run_audit(ws)["ok"]


def test_ids_with_spaces_load_and_can_be_forgotten(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sp.inter").write_text(
        "user_id:token\titem_id:token\n u1 \ti1\n u1 \ti2\nu2\ti1 \nu2\ti3\n"
    )
    ws = Workspace(tmp_path / "ws", dataset="sp", data_dir=data)
    assert sorted(ws.dataset.user_tokens) == ["u1", "u2"]
    out = forget(ws, [ForgetRequest.from_dict({"kind": "user", "users": [" u1"]})])
    assert out["requests"][0]["created"]
    assert ws.view().forgotten_users[ws.dataset.user_index("u1")]


def test_unlearn_records_and_applies_through_the_stage_runner(ws, tmp_path, capsys):
    """``llmrec unlearn`` leaves no stage pending: the store is forgotten in at once."""
    root = ["--workspace", str(ws.root)]
    assert main(["train", "--model", "bpr", "--epochs", "2", *root]) == 0
    req = tmp_path / "r.jsonl"
    req.write_text(json.dumps({"kind": "item", "items": ["i3"]}) + "\n")
    assert main(["unlearn", "--method", "retrain", "--request", str(req), *root]) == 0
    capsys.readouterr()
    with ws.ledger() as led:
        assert led.version == 1 and led.unfinished() == {}
    store = RetrievalStore.load(ws)
    assert store.ledger_version == 1 and ws.dataset.item_index("i3") not in store.index.ids


def test_served_llm_ranking_follows_the_policy(ws):
    """A catalogue-scope LLM answer can name items outside the (already filtered) candidate
    list: CRAGRU serving filters the final ranking by the policy too."""
    from llmrec.llm.backends import Ranking
    from llmrec.serving.cragru import _apply_policy

    user, item = _train_pair(ws)
    forget(ws, [ForgetRequest("interactions", pairs=((user, item),))])
    ds = ws.dataset
    u, i = ds.user_index(user), ds.item_index(item)
    other = next(j for j in range(ds.n_items) if j != i)
    r = Ranking(u, np.array([i, other]), np.array([2.0, 1.0]), "json")
    assert _apply_policy(ws, ws.view(), u, r).items.tolist() == [i, other]  # retrain semantics
    assert main(["forget", "--workspace", str(ws.root), "--policy", "suppress"]) == 0
    ws = Workspace(ws.root)
    kept = _apply_policy(ws, ws.view(), u, r)
    assert kept.items.tolist() == [other] and kept.scores.tolist() == [1.0]
