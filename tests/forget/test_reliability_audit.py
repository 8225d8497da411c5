"""An audit that trusts nothing it can check: one tampering per artifact kind fails
``llmrec audit`` and names the artifact; a forget that would skip or mis-apply an artifact is
refused; the answer does not depend on the thread count, the working directory or on the
workspace having been copied."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.llm.adapters import adapters_root, tune_adapters
from llmrec.models.training import checkpoint_path, retained_data, train_model
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A workspace with every artifact kind, one forget applied, audit clean."""
    root = tmp_path_factory.mktemp("built")
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4)
    tune_adapters(ws, adapter_config(lm.resolve(), epochs=1))
    ds = ws.dataset
    forget(ws, [ForgetRequest("item", items=(str(ds.item_tokens[5]),))])
    data = retained_data(ws)
    path = checkpoint_path(ws, "bpr")
    train_model(ws, "bpr", epochs=1, data=data).save(path, data.version)
    with ws.ledger() as led:
        led.register_artifact("model:bpr", "checkpoint", path, data.version)
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    return root


@pytest.fixture()
def ws(built, tmp_path) -> Workspace:
    """A copy of the built workspace (copies must stay valid: paths are workspace-relative)."""
    shutil.copytree(built, tmp_path / "copy", symlinks=True)
    ws = Workspace(tmp_path / "copy" / "ws")
    with ws.ledger() as led:
        for a in led.artifacts():
            if a["kind"] != "base-lm":
                assert Path(a["path"]).resolve().is_relative_to(ws.root.resolve()), a
    return ws


def _store(ws: Workspace) -> tuple[Path, dict]:
    p = RetrievalStore.manifest_path(ws, "retrieval")
    return p.parent, json.loads(p.read_text())


def _named(ws: Workspace, artifact: str, fragment: str = "") -> list[dict]:
    res = run_audit(ws)
    assert not res["ok"]
    hits = [
        v
        for v in res["violations"]
        if v["artifact"].startswith(artifact) and fragment in v["problem"]
    ]
    assert hits, res["violations"]
    return hits


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(255 - b for b in data[mid : mid + 16])
    path.write_bytes(bytes(data))


def test_copied_workspace_is_clean(ws):
    res = run_audit(ws)
    assert res["ok"], res["violations"]


def test_index_file_garbled(ws):
    root, man = _store(ws)
    _garble(root / man["files"]["index"])
    _named(ws, "retrieval:retrieval", "content hash")


def test_forgotten_item_label_restored_in_clusters(ws):
    root, man = _store(ws)
    path = root / man["files"]["clusters"]
    with np.load(path) as z:
        labels, centroids = z["labels"].copy(), z["centroids"]
    labels[5] = 0  # item 5 was forgotten
    with open(path, "wb") as fh:
        np.savez(fh, labels=labels, centroids=centroids)
    _named(ws, "retrieval:retrieval", "label forgotten item")
    _named(ws, "retrieval:retrieval", "content hash")


def test_clusters_garbled(ws):
    root, man = _store(ws)
    (root / man["files"]["clusters"]).write_bytes(b"not a zip file")
    _named(ws, "retrieval:retrieval", "unreadable clusters")


def test_counts_truncated(ws):
    root, man = _store(ws)
    p = root / man["files"]["counts"]
    p.write_bytes(p.read_bytes()[:100])
    _named(ws, "retrieval:retrieval", "counts")


def test_store_manifest_deleted_blocks_forget(ws, capsys):
    root, _ = _store(ws)
    (root / "manifest.json").unlink()
    _named(ws, "retrieval-store:retrieval", "manifest.json is missing")
    req = ws.root.parent / "r.jsonl"
    req.write_text(json.dumps({"kind": "item", "items": [str(ws.dataset.item_tokens[11])]}))
    assert main(["forget", "--workspace", str(ws.root), "--request", str(req)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to forget" in err[0], err
    with ws.ledger() as led:
        assert led.version == 1  # nothing recorded


def test_store_manifest_garbled(ws):
    root, _ = _store(ws)
    (root / "manifest.json").write_bytes(b"\xff\xfe garbage")
    _named(ws, "retrieval", "manifest")


def test_registry_rows_deleted(ws, capsys):
    db = sqlite3.connect(ws.ledger_path)
    db.execute("DELETE FROM artifacts")
    db.commit()
    db.close()
    _named(ws, "retrieval-store:retrieval", "not in the ledger's registry")
    _named(ws, "adapter/shard-000", "not in the ledger's registry")
    req = ws.root.parent / "r.jsonl"
    req.write_text(json.dumps({"kind": "item", "items": [str(ws.dataset.item_tokens[11])]}))
    assert main(["forget", "--workspace", str(ws.root), "--request", str(req)]) != 0
    assert "refusing to forget" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["deleted", "truncated", "replaced"])
def test_ledger_lost_or_replaced(ws, how):
    if how == "deleted":
        ws.ledger_path.unlink()
    elif how == "truncated":
        ws.ledger_path.write_bytes(b"")
    else:  # another ledger with as many requests: same version, another history
        ws.ledger_path.unlink()
        with ws.ledger() as led:
            led.record(ForgetRequest("item", items=(str(ws.dataset.item_tokens[9]),)))
    for p in ws.root.glob("ledger.sqlite-*"):
        p.unlink()
    hits = _named(ws, "retrieval", "lost or replaced")
    assert hits


def test_adapter_weights_changed(ws):
    _garble(adapters_root(ws) / "shard-000" / "adapter_model.safetensors")
    _named(ws, "adapter/shard-000", "content hash")


def test_adapter_truncated_to_zero(ws):
    (adapters_root(ws) / "shard-001" / "adapter_model.safetensors").write_bytes(b"")
    _named(ws, "adapter/shard-001", "content hash")


def test_adapter_shard_manifest_garbled(ws):
    (adapters_root(ws) / "shard-002" / "llmrec_shard.json").write_text("{garbled")
    _named(ws, "adapter/shard-002", "content hash")


def test_adapters_config_deleted(ws):
    (adapters_root(ws) / "config.json").unlink()
    _named(ws, "adapters", "config.json is missing")


def test_checkpoint_garbled(ws):
    _garble(checkpoint_path(ws, "bpr"))
    _named(ws, "model:bpr", "content hash")


def test_served_log_line_garbled(ws):
    log = ws.root / "artifacts" / "served" / "log.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('{"user": "u1", "items": [\n')
    _named(ws, "served-log", "corrupt served-log line")


def _audit_cli(ws: Workspace, cwd: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-m", "llmrec", "audit", "--workspace", str(ws.root.resolve()), "--json"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    assert "Traceback" not in res.stderr, res.stderr
    return json.loads(res.stdout)


def test_audit_same_on_any_thread_count_and_directory(ws, monkeypatch):
    """Acceptance 3 on a copied workspace: 1, 2 and 4 BLAS threads, opened by a relative path
    from its parent and by an absolute one from /, and once through the CLI."""
    from threadpoolctl import threadpool_limits

    results = []
    for threads, cwd, root in (
        (1, ws.root.parent, "ws"),
        (2, Path("/"), ws.root),
        (4, "/", ws.root),
    ):
        monkeypatch.chdir(cwd)
        with threadpool_limits(limits=threads):
            results.append(run_audit(Workspace(root)))
    results.append(_audit_cli(ws, Path("/"), 2))
    for r in results:
        assert r["ok"], r["violations"]
        assert r["ledger_version"] == results[0]["ledger_version"]


def test_ease_weights_do_not_depend_on_thread_count():
    """The source of the thread dependence: a threaded LAPACK factorisation in EASE (at this
    size a threaded dpotrf/dpotri gave other bits on 2 threads than on 1)."""
    from threadpoolctl import threadpool_limits

    from retrieval.candidates import CooccurrenceConfig, CooccurrenceModel, user_rows

    rng = np.random.default_rng(0)
    n_items, n_users = 700, 1500
    rows = [
        np.unique(rng.choice(n_items, size=int(rng.integers(5, 60)), replace=False))
        for _ in range(n_users)
    ]
    x = user_rows(n_items, rows)
    out = []
    for threads in (1, 2, 4):
        with threadpool_limits(limits=threads):
            gen = CooccurrenceModel.build(CooccurrenceConfig(), x, n_users)
            out.append(gen._ease_weights())
    assert all(np.array_equal(out[0], w) for w in out[1:])


def test_adapters_unwritable_forget_fails_and_recommend_refuses(ws, monkeypatch, capsys):
    """Acceptance 5: with the adapters folder read-only, ``forget`` fails with one line and
    ``recommend`` refuses to serve until the stage is done (as root, whom permissions do not
    stop, the folder's writes are made to fail the way they would)."""
    import llmrec.llm.adapters as adapters

    root = adapters_root(ws)
    user = str(ws.dataset.user_tokens[2])
    serve = ["recommend", "--user", user, "--workspace", str(ws.root), "--json"]
    assert main(serve) == 0
    capsys.readouterr()
    real = adapters.atomic_write_json

    def read_only(path, obj):
        if Path(path).resolve().is_relative_to(root.resolve()):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, obj)

    monkeypatch.setattr(adapters, "atomic_write_json", read_only)
    os.chmod(root, 0o555)
    try:
        req = ws.root.parent / "r.jsonl"
        req.write_text(json.dumps({"kind": "user", "users": [str(ws.dataset.user_tokens[3])]}))
        assert main(["forget", "--workspace", str(ws.root), "--request", str(req)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Permission denied" in err[0], err
        assert main(serve) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "llmrec forget" in err[0] and "adapters" in err[0], err
    finally:
        os.chmod(root, 0o755)
    monkeypatch.setattr(adapters, "atomic_write_json", real)
    assert main(["forget", "--workspace", str(ws.root)]) == 0
    assert main(serve) == 0
    # everything is applied, the CF checkpoint too (retrained by its forget stage)
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    assert res["stages"]["checkpoints"]["status"] == "clean"


def test_shard_left_over_from_a_larger_tuning(ws):
    cfg_path = adapters_root(ws) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "n_shards": 2}))
    _named(ws, "adapter/shard-002", "left over")


def test_clusters_recomputed_from_the_retained_items(ws):
    """Labels swapped between two retained items (hash re-recorded, so only the recomputation
    can tell) are caught."""
    from llmrec.integrity import file_sha256

    root, man = _store(ws)
    path = root / man["files"]["clusters"]
    with np.load(path) as z:
        labels, centroids = z["labels"].copy(), z["centroids"]
    a, b = np.flatnonzero(labels >= 0)[:1][0], np.flatnonzero(labels != labels[labels >= 0][0])
    b = b[labels[b] >= 0][0]
    labels[a], labels[b] = labels[b], labels[a]
    with open(path, "wb") as fh:
        np.savez(fh, labels=labels, centroids=centroids)
    man["sha256"][man["files"]["clusters"]] = file_sha256(path)
    (root / "manifest.json").write_text(json.dumps(man))
    _named(ws, "retrieval:retrieval", "fresh clustering")
