"""Acceptance 1 of the reliability issue: after ``llmrec compare --keep-workspaces`` and a
``forget`` of one of its users, nothing under the workspace serves or names that user unless the
audit flags it. Every file is scanned: text for the user's id (the dataset's ids are made
distinctive, ``usr17x``), result files for the user's internal index, kept workspaces through
their own retrieval store and audit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.data.synthetic import SyntheticSpec, write_synthetic
from llmrec.experiments.compare import llm as compare_llm
from llmrec.experiments.compare import run_compare
from llmrec.forget.audit import run_audit
from llmrec.forget.stages.runs import named_users
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.lm import adapter_config, tiny_lm
from llmrec.workspace import Workspace

HP = {"dim": 8, "epochs": 5, "batch_size": 256, "n_neg": 4}


def _distinct_ids(folder: Path) -> None:
    """User ids ``N`` become ``usrNx``: a byte scan for one then means that user."""
    for suffix in ("inter", "user"):
        p = folder / f"syn.{suffix}"
        lines = p.read_text().split("\n")
        out = [lines[0]] + [
            f"usr{ln.split(chr(9), 1)[0]}x\t" + ln.split("\t", 1)[1] for ln in lines[1:] if ln
        ]
        p.write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    root = tmp_path_factory.mktemp("kept")
    data = write_synthetic(SyntheticSpec(1200, users=50, items=60, seed=5), root / "data", "syn")
    _distinct_ids(data)
    ws = Workspace(root / "ws", dataset="syn", data_dir=data)
    lm = tiny_lm(ws, default_lm_dir(ws))

    def small_build(sub, lm_dir, seed, adapters=True, cache_dir=None, source="ease"):
        from llmrec.llm.adapters import tune_adapters
        from retrieval.store import RetrievalStore

        RetrievalStore.build(sub, encoder="cf", n_candidates=20, seed=seed, n_clusters=4)
        if adapters:
            tune_adapters(sub, adapter_config(lm.resolve(), n_shards=2, epochs=1))

    mp = pytest.MonkeyPatch()
    mp.setattr(compare_llm, "build_llm_path", small_build)
    try:
        run = run_compare(
            ws,
            ["random:10%users"],
            ["retrain", "cragru"],
            seeds=[3],
            completeness=False,
            model_overrides=HP,
            verify_exact=False,
            keep_workspaces=True,
        )
    finally:
        mp.undo()
    return ws, run


def _scan(root: Path, token: bytes) -> list[Path]:
    """Files (ledgers aside: they record the request itself) whose bytes hold ``token``."""
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and ".sqlite" not in p.name and token in p.read_bytes():
            hits.append(p)
    return hits


@pytest.fixture(scope="module")
def forgotten(kept, tmp_path_factory):
    """The kept run after ``llmrec forget`` of one of its users (a module fixture, so every
    test sees the same state whatever the order or worker it runs in)."""
    from retrieval.store import RetrievalStore

    ws, run = kept
    (sub_root,) = ws.kept_workspaces()
    assert sub_root.is_relative_to(Path(run["run_dir"]))
    results = json.loads(Path(run["results"]).read_text())
    seed = run["scenarios"]["random:10%users"][0]
    # a user the run named in per-user rows and whose history the kept workspace retains
    store = RetrievalStore.load(Workspace(sub_root))
    user = next(u for u in seed["neighbours"] if len(store.history(u)[0]))
    token = str(ws.dataset.user_tokens[user])
    before = {"named": user in named_users(results), "audit_ok": run_audit(ws)["ok"]}

    req = tmp_path_factory.mktemp("req") / "r.jsonl"
    req.write_text(json.dumps({"kind": "user", "users": [token]}) + "\n")
    assert main(["forget", "--workspace", str(ws.root), "--request", str(req)]) == 0
    return ws, run, sub_root, user, token, before


def test_forgotten_user_leaves_every_run_file(forgotten):
    from retrieval.store import RetrievalStore

    ws, run, sub_root, user, token, before = forgotten
    assert before == {"named": True, "audit_ok": True}
    audit = run_audit(ws)
    assert audit["ok"], audit["violations"]
    assert audit["stages"]["runs"]["status"] == "clean"
    assert user not in named_users(json.loads(Path(run["results"]).read_text()))
    assert _scan(ws.root, token.encode()) == []
    again = RetrievalStore.load(Workspace(sub_root))
    assert len(again.history(user)[0]) == 0
    with Workspace(sub_root).ledger() as led:
        assert any(e.request.users == (token,) for e in led.entries())


def test_audit_flags_what_forget_did_not_cover(forgotten):
    """A results file edited back to name the user, and a workspace copied under runs/
    without being registered, are violations until forget covers them."""
    ws, run, sub_root, user, _, _ = forgotten
    path = Path(run["results"])
    original = path.read_text()
    obj = json.loads(original)
    obj["scenarios"]["random:10%users"]["seeds"][0]["neighbours"].append(user)
    path.write_text(json.dumps(obj))
    legacy = ws.root / "runs" / "compare-old" / "cragru-seed1"
    shutil.copytree(sub_root, legacy)
    try:
        problems = {f["artifact"] for f in run_audit(ws)["violations"]}
        assert problems == {"runs:results", "runs:workspace"}
    finally:
        path.write_text(original)
        shutil.rmtree(legacy.parent)
    assert run_audit(ws)["ok"]


def test_scratch_of_a_failed_run_is_deleted(tmp_path, monkeypatch):
    """The scratch goes also when the run fails half way."""
    from llmrec.testing.fixtures import small_workspace

    ws = small_workspace(tmp_path, interactions=600)

    def broken(sub, *a, **k):
        (sub.root / "artifacts").mkdir(parents=True)
        raise RuntimeError("broken build")

    monkeypatch.setattr(compare_llm, "build_llm_path", broken)
    monkeypatch.setattr(compare_llm, "_base_lm", lambda ctx: tmp_path)
    with pytest.raises(RuntimeError, match="broken build"):
        run_compare(
            ws, ["random:10%users"], ["cragru"], seeds=[1], completeness=False, model_overrides=HP
        )
    (run_dir,) = (ws.root / "runs").iterdir()
    assert not (run_dir / compare_llm.SCRATCH).exists()
    assert not np.any([p.name == "workspace.json" for p in run_dir.rglob("*")])
