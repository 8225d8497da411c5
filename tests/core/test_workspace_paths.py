"""How paths are written into a workspace (docs/design.md §3.3): relative to the workspace when
inside it, climbing with ``..`` only into the workspace whose runs keep this one, absolute
otherwise; and read back wherever the workspace lives now."""

from __future__ import annotations

import json
import shutil

from llmrec.integrity import enclosing_workspace, relative_to_root, resolve_in
from llmrec.testing.fixtures import write_tiny_dataset
from llmrec.workspace import Workspace


def test_paths_inside_are_relative_outside_absolute(tmp_path):
    ws = tmp_path / "ws"
    (ws / "artifacts" / "lm").mkdir(parents=True)
    assert relative_to_root(ws, ws / "artifacts" / "lm") == "artifacts/lm"
    assert relative_to_root(ws, ws) == "."
    outside = tmp_path / "models" / "mine"
    assert relative_to_root(ws, outside) == str(outside)
    assert resolve_in(tmp_path / "copy", "artifacts/lm") == tmp_path / "copy" / "artifacts" / "lm"
    assert resolve_in(tmp_path / "copy", str(outside)) == outside


def test_a_kept_workspace_reaches_into_its_enclosing_one_relatively(tmp_path):
    main = tmp_path / "ws"
    main.mkdir()
    (main / "workspace.json").write_text("{}")
    scratch = main / "runs" / "compare-1" / "workspaces"
    sub = scratch / "cragru-seed3"
    (sub / "artifacts").mkdir(parents=True)
    (sub / "workspace.json").write_text("{}")
    assert enclosing_workspace(sub) == main
    assert relative_to_root(sub, scratch / "base-lm") == "../base-lm"
    assert relative_to_root(sub, main / "artifacts" / "lm") == "../../../../artifacts/lm"
    assert relative_to_root(sub, tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    # a folder holding a workspace.json is not an enclosing workspace unless this one is in
    # its runs: a workspace inside another's artifacts keeps its outside paths absolute
    other = main / "artifacts" / "nested"
    other.mkdir(parents=True)
    assert enclosing_workspace(other) == other
    assert relative_to_root(other, main / "x") == str(main / "x")


def test_a_data_dir_inside_the_workspace_moves_with_it(tmp_path):
    root = tmp_path / "ws"
    data = write_tiny_dataset(root / "data")
    ws = Workspace(root, dataset="tiny", data_dir=data)
    n = ws.dataset.n_inter
    assert json.loads((root / "workspace.json").read_text())["data_dir"] == "data"
    moved = tmp_path / "moved" / "ws"
    shutil.move(root, moved)
    again = Workspace(moved, dataset="tiny", data_dir=moved / "data")
    assert again.data_dir == moved / "data" and again.dataset.n_inter == n
