"""Opening a workspace to read writes nothing: no file created, changed or removed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from llmrec.cli.main import main
from llmrec.errors import LlmrecError
from llmrec.testing.fixtures import write_tiny_dataset
from llmrec.workspace import Workspace


def _files(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash (folders' own times do not count: a
    SQLite reader's journal comes and goes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_reading_commands_write_nothing(tmp_path, capsys):
    data = write_tiny_dataset(tmp_path / "data")
    ws_args = ["--workspace", str(tmp_path / "ws"), "--dataset", "tiny", "--data-dir", str(data)]
    assert main(["index", "build", "--encoder", "cf", "--clusters", "2", "--quiet", *ws_args]) == 0
    before = _files(tmp_path / "ws")
    assert "workspace.json" in before and "ledger.sqlite" in before
    for argv in (
        ["data", "info"],
        ["audit"],
        ["index", "info"],
        ["retrieve", "--user", "u1"],
        ["--json", "audit"],
    ):
        assert main([*argv, *ws_args]) == 0, argv
    capsys.readouterr()
    assert _files(tmp_path / "ws") == before
    ws = Workspace(tmp_path / "ws", read_only=True)
    assert ws.dataset.n_users == 6 and ws.view().keep.all()
    assert _files(tmp_path / "ws") == before
    with pytest.raises(LlmrecError, match="read-only"):
        ws.new_run("x", {})


def test_a_new_workspace_opened_to_read_is_not_created(tmp_path, capsys):
    data = write_tiny_dataset(tmp_path / "data")
    ws = Workspace(tmp_path / "fresh", dataset="tiny", data_dir=data, read_only=True)
    assert ws.dataset.n_items == 8 and ws.split is not None and ws.view().keep.all()
    assert not (tmp_path / "fresh").exists()
    argv = ["data", "info", "--workspace", str(tmp_path / "fresh2"), "--dataset", "tiny"]
    assert main([*argv, "--data-dir", str(data)]) == 0
    assert not (tmp_path / "fresh2").exists()
    # a workspace opened to write still records its dataset once it loads
    assert Workspace(tmp_path / "w", dataset="tiny", data_dir=data).dataset.n_users == 6
    assert (tmp_path / "w" / "workspace.json").is_file()
