"""Bad input at the CLI: one line on stderr, non-zero exit, no traceback, nothing in the ledger."""

import json
import sqlite3
import subprocess
import sys

import pytest

from llmrec.testing.fixtures import write_tiny_dataset


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "llmrec", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def forget_cli(req, data, ws, *extra, dataset="tiny"):
    """``llmrec forget --request REQ`` on dataset ``dataset`` in folder ``data``, workspace ``ws``."""
    return run(
        "forget", "--request", str(req), "--dataset", dataset, "--data-dir", str(data),
        "--workspace", str(ws), *extra,
    )  # fmt: skip


def assert_clean_error(res, fragment):
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and fragment in lines[0]


def ledger_count(ws):
    p = ws / "ledger.sqlite"
    if not p.exists():
        return 0
    return sqlite3.connect(p).execute("SELECT COUNT(*) FROM requests").fetchone()[0]


BAD_INTER = {
    "missing_type": ("user_id\titem_id:token\n1\t2\n", "no ':type' suffix"),
    "column_count": ("user_id:token\titem_id:token\n1\t2\t3\n", "tab-separated columns"),
    "non_numeric_rating": (
        "user_id:token\titem_id:token\trating:float\n1\t2\tgood\n",
        "expects a number",
    ),
    "empty": ("", "empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INTER))
def test_malformed_atomic_file(tmp_path, case):
    content, fragment = BAD_INTER[case]
    data = tmp_path / "data"
    data.mkdir()
    (data / "bad.inter").write_text(content)
    req = tmp_path / "r.jsonl"
    req.write_text('{"kind": "user", "users": ["1"]}\n')
    ws = tmp_path / "ws"
    res = forget_cli(req, data, ws, dataset="bad")
    assert_clean_error(res, fragment)
    assert ledger_count(ws) == 0


def test_missing_dataset(tmp_path):
    res = run(
        "data",
        "info",
        "--dataset",
        "nowhere",
        "--data-dir",
        str(tmp_path),
        "--workspace",
        str(tmp_path / "ws"),
    )
    assert_clean_error(res, "not found")
    assert not (tmp_path / "ws" / "workspace.json").exists()


@pytest.mark.parametrize(
    "request_obj, fragment",
    [
        ({"kind": "user", "users": ["nobody"]}, "unknown user id 'nobody'"),
        ({"kind": "item", "items": ["i99"]}, "unknown item id 'i99'"),
        ({"kind": "interactions", "pairs": [["u0", "nobody"]]}, "unknown item id 'nobody'"),
        ({"kind": "attribute", "attributes": ["salary"]}, "unknown user attribute"),
    ],
)
def test_unknown_ids_write_nothing(tmp_path, request_obj, fragment):
    data = write_tiny_dataset(tmp_path / "data")
    ws = tmp_path / "ws"
    req = tmp_path / "r.jsonl"
    # a good request first in the same file: the whole file is rejected, nothing recorded
    req.write_text(
        json.dumps({"kind": "user", "users": ["u1"]}) + "\n" + json.dumps(request_obj) + "\n"
    )
    res = forget_cli(req, data, ws)
    assert_clean_error(res, fragment)
    assert ledger_count(ws) == 0


def test_forget_records_once_and_reports_json(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    ws = tmp_path / "ws"
    req = tmp_path / "r.jsonl"
    req.write_text(
        '{"kind": "user", "users": ["u1"]}\n{"kind": "interactions", "pairs": [["u0", "i1"]]}\n'
    )
    first = json.loads(forget_cli(req, data, ws, "--json").stdout)
    second = json.loads(forget_cli(req, data, ws, "--json").stdout)
    assert [r["created"] for r in first["requests"]] == [True, True]
    assert [r["created"] for r in second["requests"]] == [False, False]
    assert second["ledger_version"] == 2 and ledger_count(ws) == 2
    info = json.loads(run("data", "info", "--workspace", str(ws), "--json").stdout)
    assert info["ledger"]["forgotten_users"] == 1 and info["users"] == 6


def test_invalid_request_json(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    req = tmp_path / "r.jsonl"
    req.write_text('{"kind": "user", "users": ["u1"]}\n{"kind": \n')
    res = forget_cli(req, data, tmp_path / "ws")
    assert_clean_error(res, "invalid JSON")
    assert ledger_count(tmp_path / "ws") == 0


def test_workspace_dataset_mismatch(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    ws = tmp_path / "ws"
    assert (
        run(
            "data", "split", "--dataset", "tiny", "--data-dir", str(data), "--workspace", str(ws)
        ).returncode
        == 0
    )
    res = run("data", "info", "--dataset", "ml-100k", "--workspace", str(ws))
    assert_clean_error(res, "holds dataset 'tiny'")
