"""Acceptance 4 of the reliability issue (27): a hostile sweep over the classes it found --
non-canonical ids, duplicate keys, typed id columns, meaningless option values, requests that
would leave no training data, tampered served logs and run folders -- ends with 0 internal
errors, 0 silent accepts of meaningless values and 0 audit misses. Each case is one CLI call
(or one tampering followed by ``llmrec audit``) on a tiny workspace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmrec.cli.main import main
from llmrec.workspace import Workspace
from tests.conftest import write_tiny_dataset

BAD_CF_SET = [
    "epochs=1000000000",
    "epochs=-3",
    "epochs=0",
    "epochs=2.5",
    "epochs=true",
    "epochs=[3]",
    "epochs={}",
    "lr=-1",
    "lr=0",
    "lr=1e300",
    "lr=null",
    'lr="abc"',
    "weight_decay=-1",
    "batch_size=0",
    "n_neg=0",
    "seed=4294967296",
    "seed=-1",
    "nonsense=1",
]
BAD_INTS = ["١٠", "１２３", "1_0", "0x10", "1e3", "²", "+", ""]
BAD_REQUESTS = [
    '{"kind":"user","users":["u1"],"users":["u2"]}',
    '{"kind":"user","kind":"item","items":["i1"]}',
    '{"kind":"attribute","attributes":["age"],"users":null}',
    '{"kind":"attribute","attributes":["age"],"users":[]}',
    '{"kind":"user","users":["nobody"]}',
    '{"kind":"user","users":["u0","u1","u2","u3","u4","u5"]}',
    '{"kind":"item","items":["i0","i1","i2","i3","i4","i5","i6","i7"]}',
    '{"kind":"user","users":[" "]}',
    '{"kind":"user","users":[1.5]}',
]
BAD_INTER = [
    "user_id:token\titem_id:token\trating:float\nu\ta\tnan\nu\tb\t3\n",
    "user_id:token\titem_id:token\trating:float\nu\ta\tinf\nu\tb\t3\n",
    "user_id:token\titem_id:token\trating:float\nu\ta\t3\nu\ta\t5\n",
    "user_id:token\titem_id:token\trating:float\nu\ta\t3\nu\tb\t\n",
    "user_id:float\titem_id:token\trating:float\nnan\ta\t3\n",
    "user_id:token_seq\titem_id:token\trating:float\nu v\ta\t3\n",
]


class Tally:
    """Counts per outcome class; a case lists itself under what went wrong."""

    def __init__(self) -> None:
        self.cases = 0
        self.internal: list[str] = []
        self.silent: list[str] = []
        self.missed: list[str] = []

    def run(self, capsys, argv: list[str], meaningless: bool, label: str) -> int:
        self.cases += 1
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse rejects a value: exit 2 and one line
            rc = int(exc.code or 0)
        err = capsys.readouterr().err.strip()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if "unexpected" in err or "Traceback" in err or (rc != 0 and len(lines) != 1):
            self.internal.append(f"{label}: {err[:200]}")
        elif meaningless and rc == 0:
            self.silent.append(label)
        return rc

    def audit_flags(self, capsys, argv: list[str], label: str) -> None:
        self.cases += 1
        rc = main(["audit", *argv])
        out = capsys.readouterr()
        if "unexpected" in out.err:
            self.internal.append(f"{label}: {out.err[:200]}")
        elif rc != 1:
            self.missed.append(label)


@pytest.fixture()
def ws(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    root = tmp_path / "ws"
    Workspace(root, dataset="tiny", data_dir=data).dataset  # noqa: B018  (writes workspace.json)
    return root, ["--workspace", str(root), "--dataset", "tiny", "--data-dir", str(data)]


def test_hostile_sweep(ws, tmp_path, capsys):
    root, args = ws
    t = Tally()
    assert main(["data", "info", *args]) == 0
    capsys.readouterr()
    before = (root / "workspace.json").read_bytes()
    for s in BAD_CF_SET:
        t.run(capsys, ["forget", *args, "--cf-method", "finetune", "--cf-set", s], True, s)
    for v in BAD_INTS:
        t.run(capsys, ["retrieve", *args, "--user", "u1", "--H", v], True, f"--H {v!r}")
        t.run(capsys, ["data", "synth", "--interactions", v, "--out", str(tmp_path)], True, v)
    for k, text in enumerate(BAD_REQUESTS):
        req = tmp_path / f"bad{k}.jsonl"
        req.write_text(text + "\n")
        for option in ([], ["--policy", "suppress"], ["--cf-method", "finetune"]):
            label = f"request {text} {option}"
            t.run(capsys, ["forget", *args, *option, "--request", str(req)], True, label)
    assert (root / "workspace.json").read_bytes() == before  # nothing rejected was saved
    for k, text in enumerate(BAD_INTER):
        d = tmp_path / f"inter{k}"
        d.mkdir()
        (d / "x.inter").write_text(text)
        argv = ["data", "info", "--workspace", str(tmp_path / f"w{k}"), "--dataset", "x"]
        t.run(capsys, [*argv, "--data-dir", str(d)], True, f"inter {text!r}")
    for option in (["--device-map", "{}"], ["--attn-implementation", "bogus"]):
        t.run(capsys, ["recommend", *args, "--user", "u1", *option], True, str(option))

    # legitimate inputs in odd forms are accepted, canonically
    req = tmp_path / "crlf.jsonl"
    req.write_bytes(b'\xef\xbb\xbf{"kind": "user", "users": ["u2\\r", " u4"]}\r\n')
    assert t.run(capsys, ["forget", *args, "--request", str(req)], False, "bom+crlf") == 0
    assert main(["audit", *args]) == 0
    capsys.readouterr()

    # tampering the audit must see
    log = root / "artifacts" / "served" / "log.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    for line in (
        '{"user": " u4", "items": ["i1"], "ledger_version": 1}',
        '{"user": "u2\\r", "items": ["i1"], "ledger_version": 1}',
        '{"user": "u1 ", "items": ["i1"], "ledger_version": 1}',
        '{"user": "u1", "user": "u4", "items": ["i1"], "ledger_version": 1}',
        '{"user": "u1", "items": [" i1", "i1"], "ledger_version": 1}',
    ):
        log.write_text(line + "\n")
        t.audit_flags(capsys, args, f"served log {line}")
    log.unlink()
    run = root / "runs" / "compare-x"
    run.mkdir(parents=True)
    user = 2  # internal index of u2, forgotten above
    (run / "results.json").write_text(json.dumps({"config": {"ledger_version": 0}, "n": [user]}))
    assert main(["audit", *args]) == 0  # no per-user row names anyone
    capsys.readouterr()
    for key in ("neighbours", "controls", "forget_users"):
        (run / "results.json").write_text(
            json.dumps({"config": {"ledger_version": 0}, "seeds": [{key: [user]}]})
        )
        t.audit_flags(capsys, args, f"results {key}")
    (run / "results.json").unlink()
    shutil.copytree(Path(args[-1]), run / "data")
    (run / "cragru-seed1").mkdir()
    (run / "cragru-seed1" / "workspace.json").write_text((root / "workspace.json").read_text())
    t.audit_flags(capsys, args, "unregistered workspace under runs/")

    print(
        f"hostile sweep: {t.cases} cases, {len(t.internal)} internal errors, "
        f"{len(t.silent)} silent accepts, {len(t.missed)} audit misses"
    )
    assert (t.internal, t.silent, t.missed) == ([], [], []), (t.internal, t.silent, t.missed)
