"""Reads cost what their answer costs (issue 27, item 11): after a forget, ``data info``'s view,
``llmrec audit`` and the next ``llmrec forget`` parse only the ledger entries newer than the
retained-view snapshot, never the whole ledger. Counted by a spy on the entry parser (no
timing); the folded views still equal a full fold, drop versions included."""

import numpy as np
import pytest

from llmrec.data.ledger import Ledger
from llmrec.data.requests import ForgetRequest
from llmrec.data.retained import RetainedView
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.workspace import Workspace


@pytest.fixture
def parsed(monkeypatch) -> list[int]:
    """Versions of the ledger entries parsed (:meth:`Ledger.entries`) while the test runs."""
    seen: list[int] = []
    entries = Ledger.entries

    def spy(self, upto=None, after=0):
        out = entries(self, upto, after)
        seen.extend(e.version for e in out)
        return out

    monkeypatch.setattr(Ledger, "entries", spy)
    return seen


def _pairs(ds, n: int) -> list[ForgetRequest]:
    rows = np.random.default_rng(0).choice(ds.n_inter, size=n, replace=False)
    return [
        ForgetRequest(
            "interactions",
            pairs=((str(ds.user_tokens[ds.inter_user[r]]), str(ds.item_tokens[ds.inter_item[r]])),),
        )
        for r in rows
    ]


def test_reads_after_a_forget_parse_only_newer_entries(tmp_path, tiny_dir, parsed):
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    requests = _pairs(ws.dataset, 12)
    forget(ws, requests[:10])
    parsed.clear()
    assert ws.view().version == 10
    assert run_audit(ws)["ok"]
    assert parsed == []  # the snapshot answers: no entry parsed
    with ws.ledger() as led:  # recorded, no snapshot yet (as by a forget killed after recording)
        led.record_many(requests[10:11])
    parsed.clear()
    res = run_audit(ws)
    assert res["ledger_version"] == 11
    assert set(parsed) == {11}  # only the entry after the snapshot
    parsed.clear()
    forget(ws, requests[11:])
    assert set(parsed) <= {11}
    with ws.ledger() as led:
        full = RetainedView.build(ws.dataset, [(e.version, e.request) for e in led.entries()])
    view = ws.view()
    assert view.version == full.version == 12
    assert np.array_equal(view.keep, full.keep) and np.array_equal(view.dropped, full.dropped)


def test_batched_fold_matches_one_by_one(tiny_dir):
    from llmrec.data.dataset import load_dataset

    ds = load_dataset("tiny", tiny_dir)
    pairs = _pairs(ds, 8)
    seq = [
        (1, pairs[0]),
        (2, ForgetRequest("interactions", pairs=pairs[1].pairs + pairs[0].pairs)),
        (3, pairs[2]),
        (4, ForgetRequest("user", users=(pairs[3].pairs[0][0],))),
        (5, pairs[3]),  # an interaction of a user already forgotten: keeps version 4
        (6, pairs[4]),
        (7, ForgetRequest("item", items=(pairs[5].pairs[0][1],))),
        (8, pairs[6]),
    ]
    one = RetainedView.full(ds)
    for v, r in seq:
        one.apply(r, v)
    batched = RetainedView.full(ds).fold(seq)
    assert batched.version == one.version == 8
    assert np.array_equal(batched.keep, one.keep)
    assert np.array_equal(batched.dropped, one.dropped)
    assert np.array_equal(batched.keep, batched.dropped == 0)
    key = ds.pair_keys == ds.user_index(pairs[0].pairs[0][0]) * ds.n_items + ds.item_index(
        pairs[0].pairs[0][1]
    )
    assert set(batched.dropped[key]) == {1}  # named again at version 2: still dropped at 1
    views = RetainedView.snapshots(ds, seq, (3, 8))
    assert np.array_equal(views[8].dropped, one.dropped) and views[3].dropped.max() == 3
