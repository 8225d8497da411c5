"""Options and requests are validated whole before anything is written (issue 27, items 3, 4
and 10): a rejected forget leaves workspace.json and the ledger as they were, a request that
would leave no training data is refused before it is recorded, a locked ledger or a full disk
is named as such."""

from __future__ import annotations

import json
import sqlite3

import pytest

from llmrec.cli.main import main
from llmrec.data.ledger import Ledger, explain
from llmrec.errors import LlmrecError
from llmrec.io import atomic_save
from llmrec.workspace import Workspace
from tests.forget.test_hostile_sweep import BAD_CF_SET


@pytest.fixture()
def ws_args(tmp_path, tiny_dir):
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    ws.dataset  # noqa: B018  (writes workspace.json)
    return ws, ["--workspace", str(ws.root), "--dataset", "tiny", "--data-dir", str(tiny_dir)]


def _req(tmp_path, *objs) -> str:
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return str(p)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("setting", BAD_CF_SET)
def test_cf_set_is_typed_and_range_checked_before_it_is_saved(ws_args, capsys, setting):
    ws, args = ws_args
    before = (ws.root / "workspace.json").read_bytes()
    assert main(["forget", *args, "--cf-method", "finetune", "--cf-set", setting]) == 2
    assert "bad --cf-set for finetune" in _one_line_error(capsys)
    assert (ws.root / "workspace.json").read_bytes() == before


def test_a_valid_cf_set_is_saved(ws_args):
    ws, args = ws_args
    assert main(["forget", *args, "--cf-method", "finetune", "--cf-set", "epochs=3"]) == 0
    assert Workspace(ws.root).cf_params == {"epochs": 3}


@pytest.mark.parametrize(
    "option", [["--policy", "suppress"], ["--cf-method", "finetune", "--cf-set", "epochs=2"]]
)
def test_a_rejected_forget_changes_no_setting(ws_args, tmp_path, capsys, option):
    ws, args = ws_args
    before = (ws.root / "workspace.json").read_bytes()
    req = _req(tmp_path, {"kind": "user", "users": ["u1"]}, {"kind": "user", "users": ["nobody"]})
    assert main(["forget", *args, *option, "--request", req]) == 2
    assert "unknown user id 'nobody'" in _one_line_error(capsys)
    assert (ws.root / "workspace.json").read_bytes() == before
    assert not ws.ledger_path.exists() or len(Ledger(ws.ledger_path)) == 0


@pytest.mark.parametrize(
    "request_",
    [
        {"kind": "user", "users": [f"u{u}" for u in range(6)]},
        {"kind": "item", "items": [f"i{i}" for i in range(8)]},
    ],
)
def test_a_request_leaving_no_training_data_is_refused_before_it_is_recorded(
    ws_args, tmp_path, capsys, request_
):
    ws, args = ws_args
    assert main(["forget", *args, "--request", _req(tmp_path, request_)]) == 2
    assert "no training interaction would remain" in _one_line_error(capsys)
    with ws.ledger() as led:
        assert led.version == 0
    # the workspace is not blocked: a later request and a resume go through
    assert (
        main(["forget", *args, "--request", _req(tmp_path, {"kind": "user", "users": ["u1"]})]) == 0
    )
    assert main(["forget", *args]) == 0


def test_spread_over_requests_the_same_is_refused(ws_args, tmp_path, capsys):
    """Every pair, one user per request in one file: refused as a whole."""
    ws, args = ws_args
    reqs = [{"kind": "user", "users": [f"u{u}"]} for u in range(6)]
    assert main(["forget", *args, "--request", _req(tmp_path, *reqs)]) == 2
    _one_line_error(capsys)
    with ws.ledger() as led:
        assert led.version == 0


def test_a_locked_ledger_is_named_as_locked_not_corrupt(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        from llmrec.data.requests import ForgetRequest

        with Ledger(path, timeout=0.1) as led, pytest.raises(sqlite3.OperationalError) as exc:
            led.record(ForgetRequest("user", users=("u1",)))
        msg = explain(exc.value, path, 0.1)
        assert "locked by another process after waiting 0.1s" in msg
        assert "backup" not in msg and "nothing was changed" in msg
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_full_disk_is_one_clear_line_and_nothing_half_written(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    target = tmp_path / "counts.npy"
    target.write_bytes(b"old")

    def short_write(tmp):
        tmp.write_bytes(b"half")
        raise OSError("40000 requested and 2016 written")  # numpy's short write, no errno

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 100, 0))
    with pytest.raises(LlmrecError, match="no space left on the device writing .*counts.npy"):
        atomic_save(target, short_write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["counts.npy"]
