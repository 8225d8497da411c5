"""A copied or moved workspace is self-contained (issue 27, item 12): every path it records
inside itself is workspace-relative, so a copy audits clean and serves its own adapters after
the original is deleted, and the adapters' training-data hash does not depend on where the
workspace lives. Adapters written in the older format (absolute base path, a hash that named
it) are named by the audit with the remedy, and re-tuned by the next tuning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmrec.cli.main import main
from llmrec.llm.adapters import (
    ShardTrainingData,
    adapters_root,
    load_config,
    shard_dir,
    shard_manifest,
)
from llmrec.llm.shards import shard_of
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore

N_SHARDS = 2


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A workspace with a base LM, a retrieval store and adapters, after one forget; the user
    served (in the shard the forget did not touch) and what they were served."""
    root = tmp_path_factory.mktemp("portable")
    ws = small_workspace(root / "orig")
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4)
    from llmrec.llm.adapters import tune_adapters

    tune_adapters(ws, adapter_config(lm.resolve(), n_shards=N_SHARDS, epochs=1))
    tokens = ws.dataset.user_tokens
    shards = shard_of(tokens, N_SHARDS, 11)
    gone = str(tokens[0])
    user = str(tokens[next(u for u in range(1, len(tokens)) if shards[u] != shards[0])])
    req = root / "forget.jsonl"
    req.write_text(json.dumps({"kind": "user", "users": [gone]}) + "\n")
    assert main(["forget", "--workspace", str(ws.root), "--request", str(req), "--quiet"]) == 0
    return ws, user, root


def _audit(ws_root: Path, capsys) -> tuple[int, str]:
    """``llmrec audit``'s exit status and report."""
    rc = main(["audit", "--workspace", str(ws_root)])
    return rc, capsys.readouterr().out


def _recommend(ws_root: Path, user: str, capsys) -> dict:
    argv = ["recommend", "--user", user, "--workspace", str(ws_root), "--show-prompt", "--json"]
    assert main([*argv, "--quiet"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _data_hashes(ws: Workspace) -> list[str]:
    cfg = load_config(ws)
    return [ShardTrainingData(ws, cfg, s, None).hash for s in range(cfg.n_shards)]


def _files_naming(root: Path, text: str) -> list[str]:
    """Files under ``root`` (the ledger included) whose bytes hold ``text``."""
    needle = text.encode()
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def test_a_copy_serves_and_audits_after_the_original_is_deleted(built, tmp_path, capsys):
    ws, user, _ = built
    served = _recommend(ws.root, user, capsys)
    assert served["adapter"] is not None and "notes" not in served
    near = tmp_path / "near" / "ws"
    deep = tmp_path / "a" / "b" / "c" / "deep" / "ws"
    shutil.copytree(ws.root, near)
    shutil.copytree(ws.root, deep)
    away = tmp_path / "away"
    shutil.move(ws.root, away)  # the original is gone (put back for the module's other tests)
    try:
        # nothing in a copy names the original's location
        assert _files_naming(near, str(ws.root)) == []
        assert _audit(near, capsys)[0] == 0
        again = _recommend(near, user, capsys)
        assert again["adapter"] == served["adapter"] and "notes" not in again
        assert again["items"] == served["items"] and again["scores"] == served["scores"]
        # the training-data hash is the same wherever the workspace lives, and is the recorded one
        near_ws, deep_ws = Workspace(near), Workspace(deep)
        hashes = _data_hashes(near_ws)
        assert _data_hashes(deep_ws) == hashes
        root = adapters_root(near_ws)
        assert [shard_manifest(shard_dir(root, s))["data_hash"] for s in range(N_SHARDS)] == hashes
        assert _audit(deep, capsys)[0] == 0
    finally:
        shutil.move(away, ws.root)


def _write_older_format(ws_root: Path) -> None:
    """The adapters as an older llmrec wrote them: the base by its absolute path, no format."""
    root = ws_root / "artifacts" / "adapters"
    base = str((ws_root / "artifacts" / "lm").resolve())
    cfg = json.loads((root / "config.json").read_text())
    cfg.pop("format")
    (root / "config.json").write_text(json.dumps(cfg | {"base": base}, indent=2))
    for s in range(N_SHARDS):
        man = shard_dir(root, s) / "llmrec_shard.json"
        m = json.loads(man.read_text())
        m.pop("format")
        man.write_text(json.dumps(m | {"base": base}, indent=2))


def test_older_adapters_in_place_are_flagged_then_retuned_by_forget(built, tmp_path, capsys):
    ws, user, root = built
    old = tmp_path / "old" / "ws"
    shutil.copytree(ws.root, old)
    _write_older_format(old)
    rc, out = _audit(old, capsys)
    assert rc == 1
    assert out.count("tuned by an older llmrec") == N_SHARDS
    assert "re-tune with 'llmrec adapters tune --force'" in out
    # its base is still where the config says: it serves
    assert _recommend(old, user, capsys)["adapter"] is not None
    # the next forget re-tunes every shard in the current format
    req = tmp_path / "r.jsonl"
    req.write_text(json.dumps({"kind": "user", "users": [user]}) + "\n")
    argv = ["forget", "--workspace", str(old), "--request", str(req), "--json", "--quiet"]
    assert main(argv) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert stages["adapters"]["retuned"] == list(range(N_SHARDS))
    stored = json.loads((old / "artifacts" / "adapters" / "config.json").read_text())
    assert stored["base"] == "./artifacts/lm" and stored["format"] == 2
    assert _audit(old, capsys)[0] == 0


def test_older_adapters_of_a_moved_workspace_name_the_remedy(built, tmp_path, capsys):
    ws, user, _ = built
    old = tmp_path / "old" / "ws"
    shutil.copytree(ws.root, old)
    _write_older_format(old)
    moved = tmp_path / "moved" / "ws"
    shutil.move(old, moved)
    W = ["--workspace", str(moved)]
    rc, out = _audit(moved, capsys)
    assert rc == 1 and "re-tune with 'llmrec adapters tune --force'" in out
    assert main(["recommend", "--user", user, *W, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is missing" in err[0] and "older llmrec" in err[0], err
    assert "'llmrec adapters tune --force'" in err[0]
    # the remedy works: re-tune, then the workspace audits clean and serves
    tune = ["adapters", "tune", *W, "--force", "--shards", "2", "--epochs", "1", "--quiet"]
    assert main([*tune, "--candidates", "10", "--history", "10"]) == 0
    capsys.readouterr()
    assert _audit(moved, capsys)[0] == 0
    assert _recommend(moved, user, capsys)["adapter"] is not None
