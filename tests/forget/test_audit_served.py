"""The forget audit and the served-recommendation log (a forget stage of its own)."""

import json

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget import registry as stages
from llmrec.forget.audit import run_audit
from llmrec.forget.stage import StageContext
from llmrec.models.training import checkpoint_path, retained_data, train_model
from llmrec.serving import served_log as served
from llmrec.workspace import Workspace


def _ws(tmp_path, tiny_dir):
    return Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)


def test_served_log_is_scrubbed_and_audited(tmp_path, tiny_dir):
    ws = _ws(tmp_path, tiny_dir)
    served.log_served(ws, "u1", ["i1", "i2", "i4"], 0, "test")
    served.log_served(ws, "u2", ["i1", "i5"], 0, "test")
    with ws.ledger() as led:
        led.record(ForgetRequest("item", items=("i2",)))
        led.record(ForgetRequest("user", users=("u2",)))
        led.record(ForgetRequest("interactions", pairs=(("u1", "i4"),)))
    with ws.ledger() as led:
        ctx = StageContext.open(ws, led)
        problems = " ".join(f["problem"] for f in served.audit(ctx))
        assert "forgotten item i2" in problems and "forgotten user u2" in problems
        assert "forgotten interaction (u1, i4)" in problems
        assert served.scrub_log(ctx)["scrubbed"] == 2
        assert served.audit(ctx) == []
    assert [(e["user"], e["items"]) for e in served.read_log(ws)] == [("u1", ["i1"])]


def test_audit_flags_stale_checkpoint_and_unfinished_stage(tmp_path, tiny_dir, capsys, monkeypatch):
    ws = _ws(tmp_path, tiny_dir)
    model = train_model(ws, "bpr", epochs=1)
    path = checkpoint_path(ws, "bpr")
    model.save(path, 0)
    with ws.ledger() as led:
        led.register_artifact("model:bpr", "checkpoint", path, 0)
    assert run_audit(ws)["ok"]
    with ws.ledger() as led:
        led.record(ForgetRequest("user", users=("u3",)), stages=["served"])
    # only the checkpoint and served stages in this workspace (no retrieval artifacts)
    monkeypatch.setattr(stages, "STAGES", stages.select("checkpoints", "served"))
    res = run_audit(ws)
    names = {f["artifact"] for f in res["violations"]}
    assert names == {"model:bpr", "stage:served", "stage:checkpoints"}
    rc = main(["audit", "--workspace", str(tmp_path / "ws"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and not out["ok"]
    # retraining at the new version and resuming the stage clears both findings
    data = retained_data(ws)
    train_model(ws, "bpr", epochs=1, data=data).save(path, data.version)
    with ws.ledger() as led:
        led.register_artifact("model:bpr", "checkpoint", path, data.version)
    assert main(["forget", "--workspace", str(tmp_path / "ws")]) == 0
    assert run_audit(ws)["ok"]


def test_served_log_ids_are_canonical_and_edits_are_seen(tmp_path, tiny_dir):
    """An id read from a CRLF file ("u2\\r") or padded (" u4") is logged as the user it names,
    so the scrub and the audit see it; a hand-edited padded id or a duplicate key is a finding."""
    ws = _ws(tmp_path, tiny_dir)
    served.log_served(ws, "u2\r", ["i1 "], 0, "test")
    served.log_served(ws, " u4", ["i1"], 0, "test")
    assert [(e["user"], e["items"]) for e in served.read_log(ws)] == [
        ("u2", ["i1"]),
        ("u4", ["i1"]),
    ]
    with ws.ledger() as led:
        led.record(ForgetRequest("user", users=("u2", "u4")))
        ctx = StageContext.open(ws, led)
        assert len(served.audit(ctx)) == 2
        served.scrub_log(ctx)
        assert served.read_log(ws) == [] and served.audit(ctx) == []
        path = served.log_path(ws)
        path.write_text('{"user": " u4", "items": ["i1"], "ledger_version": 1}\n')
        problems = " ".join(f["problem"] for f in served.audit(ctx))
        assert "forgotten user u4" in problems
        path.write_text('{"user": "u1 ", "items": ["i1"], "ledger_version": 1}\n')
        assert "not in canonical form" in served.audit(ctx)[0]["problem"]
        path.write_text('{"user": "u1", "user": "u4", "items": ["i1"], "ledger_version": 1}\n')
        assert "duplicate key 'user'" in served.audit(ctx)[0]["problem"]
