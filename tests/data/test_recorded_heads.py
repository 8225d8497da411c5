"""Recorded ledger heads (issue 27, item 11): a reader checks a snapshot's or an artifact's
ledger head with one lookup, not a pass over every request; any change to a request row drops
the recorded heads from its version on, and the audit recomputes them all."""

import sqlite3

from llmrec.data.ledger import Ledger
from llmrec.data.requests import ForgetRequest
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.workspace import Workspace

REQUESTS = [
    ForgetRequest("interactions", pairs=(("u1", "i4"),)),
    ForgetRequest("item", items=("i2",)),
    ForgetRequest("interactions", pairs=(("u3", "i1"),)),
]


def _computed(led: Ledger, version: int) -> str:
    led.trust_recorded_heads = False
    try:
        return led.head(version)
    finally:
        led.trust_recorded_heads = True


def test_forget_records_the_head_readers_use_and_edits_drop_it(tmp_path, tiny_dir, monkeypatch):
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    forget(ws, REQUESTS)
    with ws.ledger() as led:
        recorded = dict(led._db.execute("SELECT version, head FROM heads").fetchall())
        assert recorded[3] == _computed(led, 3)
    scans: list[int] = []
    chain = Ledger.head

    def spy(self, version=None):
        before = dict(self._chain)
        out = chain(self, version)
        if self._chain != before or not self.trust_recorded_heads:
            scans.append(version)
        return out

    monkeypatch.setattr(Ledger, "head", spy)
    assert ws.view().version == 3
    assert scans == []  # the snapshot's head came from the table, no pass over the requests
    monkeypatch.undo()
    db = sqlite3.connect(ws.ledger_path)
    other = ForgetRequest("interactions", pairs=(("u3", "i2"),))
    db.execute(
        "UPDATE requests SET hash=?, payload=? WHERE version=2",
        (other.content_hash, other.to_json()),
    )
    db.commit()
    assert db.execute("SELECT version FROM heads WHERE version >= 2").fetchall() == []
    db.close()
    res = run_audit(ws)
    assert any("differs" in f["problem"] for f in res["violations"]), res["violations"]


def test_audit_flags_a_recorded_head_edited_by_hand(tmp_path, tiny_dir):
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    forget(ws, REQUESTS)
    assert run_audit(ws)["ok"]
    db = sqlite3.connect(ws.ledger_path)
    db.execute("UPDATE heads SET head='0' WHERE version=3")
    db.commit()
    db.close()
    res = run_audit(ws)
    assert any(
        f["artifact"] == "ledger" and "head recorded at v3" in f["problem"]
        for f in res["violations"]
    )


def test_a_ledger_written_before_recorded_heads_gets_them(tmp_path, tiny_dir):
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    forget(ws, REQUESTS[:1])
    db = sqlite3.connect(ws.ledger_path)
    for name in ("heads_on_insert", "heads_on_update", "heads_on_delete"):
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE heads")
    db.commit()
    db.close()
    forget(ws, REQUESTS[1:])
    with ws.ledger() as led:
        assert led._db.execute("SELECT head FROM heads WHERE version=3").fetchone()[0] == (
            _computed(led, 3)
        )
    assert run_audit(ws)["ok"]
