"""Retained-view snapshots (issue 27, item 11): a read folds only the entries newer than the
newest valid snapshot; a stale or tampered snapshot is never used and the audit flags it."""

import sqlite3

import numpy as np

from llmrec.data import snapshot
from llmrec.data.requests import ForgetRequest
from llmrec.data.retained import RetainedView
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.workspace import Workspace

REQUESTS = [
    ForgetRequest("interactions", pairs=(("u1", "i4"),)),
    ForgetRequest("item", items=("i2",)),
    ForgetRequest("user", users=("u2",)),
    ForgetRequest("interactions", pairs=(("u3", "i1"),)),
]


def _ws(tmp_path, tiny_dir) -> Workspace:
    return Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)


def _count_folds(monkeypatch) -> list[int]:
    seen: list[int] = []
    fold = RetainedView.fold

    def counting(self, requests):
        requests = list(requests)
        seen.extend(v for v, _ in requests)
        return fold(self, requests)

    monkeypatch.setattr(RetainedView, "fold", counting)
    return seen


def _same(a: RetainedView, b: RetainedView) -> None:
    assert a.version == b.version
    assert np.array_equal(a.keep, b.keep)
    assert np.array_equal(a.dropped, b.dropped)
    assert np.array_equal(a.forgotten_users, b.forgotten_users)
    assert np.array_equal(a.forgotten_items, b.forgotten_items)
    assert sorted(a.hidden) == sorted(b.hidden)
    assert all(np.array_equal(a.hidden[k], b.hidden[k]) for k in a.hidden)


def _full_fold(ws: Workspace) -> RetainedView:
    with ws.ledger() as led:
        return RetainedView.build(ws.dataset, [(e.version, e.request) for e in led.entries()])


def test_read_folds_only_newer_entries_and_matches_full_fold(tmp_path, tiny_dir, monkeypatch):
    ws = _ws(tmp_path, tiny_dir)
    with ws.ledger() as led:
        led.record_many(REQUESTS[:2])
    folds = _count_folds(monkeypatch)
    first = ws.view()
    assert folds == [1, 2]
    assert [v for v, _ in snapshot.files(ws.ledger())] == [2]
    folds.clear()
    _same(ws.view(), first)
    assert folds == []  # loaded, nothing folded
    with ws.ledger() as led:
        led.record_many(REQUESTS[2:])
    folds.clear()
    view = ws.view()
    assert folds == [3, 4]  # only the two newer entries
    monkeypatch.undo()
    _same(view, _full_fold(ws))
    assert [v for v, _ in snapshot.files(ws.ledger())] == [4]  # the older one is removed
    _same(ws.view(3), _full_fold_at(ws, 3))
    assert not [f for f in run_audit(ws)["violations"] if "snapshot" in f["artifact"]]


def _full_fold_at(ws: Workspace, version: int) -> RetainedView:
    with ws.ledger() as led:
        view = RetainedView.build(
            ws.dataset, [(e.version, e.request) for e in led.entries(upto=version)]
        )
    view.version = version
    return view


def test_tampered_snapshot_is_ignored_and_flagged(tmp_path, tiny_dir, monkeypatch):
    ws = _ws(tmp_path, tiny_dir)
    with ws.ledger() as led:
        led.record_many(REQUESTS)
    truth = ws.view()
    (_, path), *_ = snapshot.files(ws.ledger())
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["dropped"] = np.zeros_like(arrays["dropped"])  # "un-forget" everything
    np.savez(path, **arrays)
    folds = _count_folds(monkeypatch)
    _same(ws.view(), truth)
    assert len(folds) == len(REQUESTS)  # refolded from scratch, never trusted
    monkeypatch.undo()
    np.savez(path, **arrays)
    res = run_audit(ws)
    assert not res["ok"]
    assert any(
        "retained-view snapshot" == f["artifact"] and "recorded hash" in f["problem"]
        for f in res["violations"]
    )


def test_snapshot_of_edited_or_rolled_back_ledger_is_not_used(tmp_path, tiny_dir, monkeypatch):
    ws = _ws(tmp_path, tiny_dir)
    with ws.ledger() as led:
        led.record_many(REQUESTS)
    ws.view()
    # edit history: request 4 replaced by another one under the same version
    db = sqlite3.connect(ws.ledger_path)
    other = ForgetRequest("interactions", pairs=(("u3", "i2"),))
    db.execute(
        "UPDATE requests SET hash=?, payload=? WHERE version=4",
        (other.content_hash, other.to_json()),
    )
    db.commit()
    db.close()
    res = run_audit(ws)
    assert any(
        f["artifact"] == "retained-view snapshot" and "differs" in f["problem"]
        for f in res["violations"]
    )
    _same(ws.view(), _full_fold(ws))
    db = sqlite3.connect(ws.ledger_path)
    db.execute(
        "UPDATE requests SET hash=?, payload=? WHERE version=4",
        (REQUESTS[3].content_hash, REQUESTS[3].to_json()),
    )
    db.commit()
    db.close()
    # rolled back: the snapshot claims a version the ledger no longer has
    ws.view()
    db = sqlite3.connect(ws.ledger_path)
    db.execute("DELETE FROM stages WHERE version=4")
    db.execute("DELETE FROM requests WHERE version=4")
    db.commit()
    db.close()
    folds = _count_folds(monkeypatch)
    view = ws.view()
    assert folds == [1, 2, 3]  # the v4 snapshot is past the ledger: not used
    monkeypatch.undo()
    _same(view, _full_fold(ws))
    db = sqlite3.connect(ws.ledger_path)
    db.execute("DELETE FROM stages WHERE version=3")
    db.execute("DELETE FROM requests WHERE version=3")
    db.commit()
    db.close()
    res = run_audit(ws)
    assert any(
        f["artifact"] == "retained-view snapshot" and "rolled back" in f["problem"]
        for f in res["violations"]
    )


def test_forget_leaves_a_snapshot_readers_use(tmp_path, tiny_dir, monkeypatch):
    ws = _ws(tmp_path, tiny_dir)
    forget(ws, REQUESTS[:2])
    forget(ws, REQUESTS[2:])
    assert [v for v, _ in snapshot.files(ws.ledger())] == [4]
    folds = _count_folds(monkeypatch)
    view = ws.view()
    assert folds == []
    monkeypatch.undo()
    _same(view, _full_fold(ws))
    assert run_audit(ws)["ok"]
