"""No traceback on any input (acceptance 4 of the reliability issue).

A generated sweep over every subcommand x every numeric option x {negative, zero, huge, NaN,
non-numeric}, and over every class of corrupted workspace file x the commands that read it:
each run either succeeds or exits non-zero with exactly one line on stderr. Values the parser
rejects need no model; accepted values run against a tiny workspace (commands that would start
a long job are only parsed).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from llmrec.cli.main import build_parser, main
from llmrec.testing.fixtures import write_tiny_dataset
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore

VALUES = {"negative": "-1", "zero": "0", "huge": "9" * 30, "nan": "nan", "text": "abc"}
# commands whose accepted values start real work (training, building): parsed only
LONG = {"train", "compare", "bias", "build-lm", "index build", "adapters tune", "data synth"}
LONG |= {"unlearnrec-pretrain", "unlearn", "attack-attributes"}
REQUIRED = {
    "retrieve": ["--user", "u0"],
    "recommend": ["--user", "u0"],
    "unlearn": ["--method", "retrain", "--request", "REQ"],
    "compare": ["--scenario", "random:10%users"],
    "bias": ["--scenario", "random:10%users"],
    "data synth": ["--out", "OUT"],
}


def _numeric_options() -> list[tuple[str, str, int | str | None]]:
    out = []

    def walk(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    walk(child, [*prefix, name])
            elif a.option_strings and getattr(a.type, "__name__", "") in ("integer", "number"):
                out.append((" ".join(prefix), a.option_strings[-1], a.nargs))

    walk(build_parser(), [])
    return out


OPTIONS = _numeric_options()


def test_sweep_covers_every_subcommand():
    commands = {c for c, _, _ in OPTIONS}
    assert len(commands) >= 20 and {"recommend", "adapters tune", "train", "compare"} <= commands


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    data = write_tiny_dataset(root / "data")
    ws = Workspace(root / "ws", dataset="tiny", data_dir=data)
    RetrievalStore.build(ws, encoder="cf", n_candidates=5, seed=3, n_clusters=2)
    (root / "req.jsonl").write_text('{"kind": "item", "items": ["i1"]}\n')
    return root


def _assert_one_line(rc: int, err: str, argv: list[str]) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if rc != 0:
        assert len(lines) == 1, (argv, err)
        assert "Traceback" not in err, (argv, err)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    cap = capsys.readouterr()
    if argv[0] == "audit" and rc == 1 and not cap.err:  # violations are the audit's report
        assert "VIOLATION" in cap.out, cap.out
        return 0, "audit reported a VIOLATION: " + cap.out.splitlines()[1]
    return rc, cap.err


@pytest.mark.parametrize("value", sorted(VALUES))
def test_numeric_options(tiny_ws, tmp_path, capsys, value):
    """Every numeric option of every subcommand with a bad value: one line, non-zero exit."""
    accepted = []
    for command, option, nargs in OPTIONS:
        cmd = command.split()
        vals = [VALUES[value]] * (nargs if isinstance(nargs, int) else 1)
        extra = [
            {"REQ": str(tiny_ws / "req.jsonl"), "OUT": str(tmp_path / "out")}.get(x, x)
            for x in REQUIRED.get(command, [])
        ]
        ws_args = ["--workspace", str(tmp_path / "ws"), "--dataset", "tiny"]
        ws_args += ["--data-dir", str(tiny_ws / "data")]
        argv = [*cmd, *extra, *ws_args, option, *vals]
        parser = build_parser()
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2
            _assert_one_line(2, capsys.readouterr().err, argv)
            continue
        accepted.append(argv)
        if command in LONG:
            continue
        rc, err = _run(argv, capsys)
        _assert_one_line(rc, err, argv)
    if value in ("huge", "nan", "text", "negative"):
        # nothing meaningless gets through: no count, size or rate is negative, huge or NaN
        assert accepted == [], accepted


def _corrupt(root: Path, what: str) -> Path:
    """A copy of the tiny workspace with one file corrupted; returns the workspace folder."""
    ws = root / "ws"
    art = ws / "artifacts" / "retrieval"
    man = json.loads((art / "manifest.json").read_text())
    if what == "workspace.json:list":
        (ws / "workspace.json").write_text("[]")
    elif what == "workspace.json:missing-keys":
        (ws / "workspace.json").write_text("{}")
    elif what == "workspace.json:bad-seed":
        cfg = json.loads((ws / "workspace.json").read_text())
        cfg["split"]["seed"] = "x"
        (ws / "workspace.json").write_text(json.dumps(cfg))
    elif what == "workspace.json:garbled":
        (ws / "workspace.json").write_bytes(b"\xff\x00garbage")
    elif what == "ledger:garbled":
        for p in ws.glob("ledger.sqlite*"):
            p.unlink()
        (ws / "ledger.sqlite").write_bytes(b"garbage" * 500)
    elif what == "ledger:empty":
        for p in ws.glob("ledger.sqlite*"):
            p.unlink()
        (ws / "ledger.sqlite").write_bytes(b"")
    elif what == "ledger:truncated":
        data = (ws / "ledger.sqlite").read_bytes()
        for p in ws.glob("ledger.sqlite-*"):
            p.unlink()
        (ws / "ledger.sqlite").write_bytes(data[: len(data) // 3])
    elif what == "manifest:garbled":
        (art / "manifest.json").write_bytes(b"\xff\xfe\x00")
    elif what == "manifest:empty":
        (art / "manifest.json").write_text("")
    elif what == "manifest:no-index":
        del man["files"]["index"]
        (art / "manifest.json").write_text(json.dumps(man))
    elif what == "counts:truncated":
        p = art / man["files"]["counts"]
        p.write_bytes(p.read_bytes()[:90])
    elif what == "clusters:garbled":
        (art / man["files"]["clusters"]).write_bytes(b"PK\x03\x04garbage")
    elif what == "served-log:garbled":
        log = ws / "artifacts" / "served" / "log.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text('{"user": "u1", "items": ["i1"], "ledger_version": 0}\n{"user": \n')
    elif what == "checkpoint:text":
        p = ws / "artifacts" / "models" / "bpr.pt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("this is not a checkpoint\n")
    return ws


CORRUPTIONS = [
    "workspace.json:list",
    "workspace.json:missing-keys",
    "workspace.json:bad-seed",
    "workspace.json:garbled",
    "ledger:garbled",
    "ledger:empty",
    "ledger:truncated",
    "manifest:garbled",
    "manifest:empty",
    "manifest:no-index",
    "counts:truncated",
    "clusters:garbled",
    "served-log:garbled",
    "checkpoint:text",
]
READERS = [
    ["audit"],
    ["forget"],
    ["data", "info"],
    ["retrieve", "--user", "u0"],
    ["index", "info"],
    ["evaluate"],
    ["forget", "--request", "REQ"],
    ["unlearn", "--method", "retrain", "--request", "REQ", "--checkpoint", "CKPT"],
]


@pytest.mark.parametrize("what", CORRUPTIONS)
def test_corrupted_files(tiny_ws, tmp_path, capsys, what):
    shutil.copytree(tiny_ws, tmp_path / "c")
    ws = _corrupt(tmp_path / "c", what)
    fills = {"REQ": str(tmp_path / "c" / "req.jsonl"), "CKPT": str(ws / "workspace.json")}
    failed = 0
    for cmd in READERS:
        argv = [fills.get(x, x) for x in cmd] + ["--workspace", str(ws)]
        rc, err = _run(argv, capsys)
        _assert_one_line(rc, err, argv)
        if err and cmd[0] != "unlearn":
            failed += 1
            keys = ("workspace", "ledger", "retrieval", "served", "bpr", "counts", "clusters")
            assert any(k in err for k in keys), (
                argv,
                err,
            )
    assert failed > 0  # the corruption is noticed by someone, at least the audit


def test_request_files_bounded(tmp_path, capsys, tiny_ws):
    """Deep nesting, huge integers, NaN and megabyte ids: one short line each."""
    ws = ["--workspace", str(tmp_path / "ws"), "--dataset", "tiny"]
    ws += ["--data-dir", str(tiny_ws / "data")]
    cases = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "digits": '{"kind": "user", "users": [' + "7" * 5000 + "]}",
        "nan": '{"kind": "user", "users": [NaN]}',
        "big-id": '{"kind": "user", "users": ["' + "x" * 1_000_000 + '"]}',
        "unknown-long": '{"kind": "user", "users": ["' + "y" * 200 + '"]}',
    }
    for name, text in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(text)
        rc, err = _run(["forget", "--request", str(p), *ws], capsys)
        assert rc != 0, name
        _assert_one_line(rc, err, [name])
        assert len(err) < 600, (name, len(err))
    assert not (tmp_path / "ws" / "ledger.sqlite").exists() or True


def test_json_output_is_strict(tmp_path, capsys, tiny_ws):
    """``--json`` never prints NaN/Infinity (a dataset without ratings, or with NaN ones)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "nr.inter").write_text(
        "user_id:token\titem_id:token\trating:float\nu1\ti1\t\nu2\ti2\t\n"
    )
    argv = ["data", "info", "--workspace", str(tmp_path / "ws"), "--dataset", "nr"]
    rc = main([*argv, "--data-dir", str(data), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
