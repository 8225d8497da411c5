"""The contract every built-in forget stage keeps (:class:`llmrec.testing.stages.StageContract`),
one test class per stage over one shared workspace.

On a small workspace holding one artifact of every family, after a user request is forgotten:
applying a stage again changes no file, every artifact records the ledger version it reflects,
the stage's audit passes and ``llmrec audit`` names it, and a forgotten record planted back is
found. Every registered built-in stage has a class here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget.audit import run_audit
from llmrec.forget.registry import registered
from llmrec.forget.stages.checkpoints import record_extra, save_checkpoint
from llmrec.llm.adapters import adapters_root, load_config, shard_dir, tune_adapters
from llmrec.llm.shards import shard_of
from llmrec.models import load_model
from llmrec.models.training import checkpoint_path, retained_data, train_model
from llmrec.serving import served_log as served
from llmrec.serving.blend import BlendFit, blend_path, fit_blend, write_blend
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from llmrec.testing.stages import StageContract, forget_after_copy
from llmrec.workspace import Workspace
from retrieval import sources
from retrieval.store import RetrievalStore

FAST = {"epochs": 2, "dim": 8}
N_SHARDS = 4


def forgotten_user(ws: Workspace) -> str:
    """A user with train interactions (the one the fixture forgets)."""
    return str(ws.dataset.user_tokens[3])


def build_all(root: Path) -> Workspace:
    """A workspace with a retrieval store, 4 adapter shards, a served blend, a CF candidate
    source, a trained CF checkpoint and a served log, every artifact at ledger v0."""
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4, cf_params=FAST)
    tune_adapters(ws, adapter_config(lm.resolve(), n_shards=N_SHARDS, epochs=1))
    write_blend(ws, fit_blend(ws, BlendFit(grid=(0.0, 2.0))))
    sources.build_source(ws, "bpr", seed=7, params=FAST)
    data = retained_data(ws)
    model = train_model(ws, "bpr", seed=1, data=data, **FAST)
    extra = record_extra({}, "train", True, data.train, trained_at=0, seed=1)
    with ws.ledger() as led:
        save_checkpoint(led, model, checkpoint_path(ws, "bpr"), "model:bpr", 0, extra)
    ds = ws.dataset
    for u in (forgotten_user(ws), str(ds.user_tokens[4])):
        served.log_served(ws, u, [str(i) for i in ds.item_tokens[:5]], 0, "test")
    run = ws.root / "runs" / "compare-1"  # a comparison's per-user rows, the user among them
    run.mkdir(parents=True)
    rows = {"users": [3, 4], "delta": [0.1, 0.2]}
    results = {"config": {"ledger_version": 0}, "seeds": [{"neighbours": [3, 4], "per_user": rows}]}
    (run / "results.json").write_text(json.dumps(results))
    return ws


@pytest.fixture(scope="module")
def every_artifact(tmp_path_factory) -> Path:
    """``ws``: every artifact after one user request; ``before``: a copy taken before it."""
    ws = build_all(tmp_path_factory.mktemp("stages"))
    return forget_after_copy(ws, ForgetRequest("user", users=(forgotten_user(ws),)))


class BuiltIn(StageContract):
    """A built-in stage over the shared workspace of every artifact family."""

    @pytest.fixture(scope="class")
    @classmethod
    def built(cls, every_artifact: Path) -> Path:
        return every_artifact


class TestRetrievalStage(BuiltIn):
    stage_name = "retrieval"

    def versions(self, ws: Workspace) -> list[int]:
        return [json.loads(RetrievalStore.manifest_path(ws).read_text())["ledger_version"]]

    def plant(self, ws: Workspace, before: Path) -> None:
        """The co-occurrence counts of before the request (the user's pairs counted) restored."""
        counts = before / "artifacts" / "retrieval" / "counts.npy"
        shutil.copy(counts, RetrievalStore.load(ws).root)


class TestAdapterStage(BuiltIn):
    stage_name = "adapters"

    def versions(self, ws: Workspace) -> list[int]:
        with ws.ledger() as led:
            return [a["ledger_version"] for a in led.artifacts() if a["kind"] == "lora-adapter"]

    def plant(self, ws: Workspace, before: Path) -> None:
        """The forgotten user's shard adapter, tuned on the user's data, restored."""
        cfg = load_config(ws)
        s = int(shard_of(ws.dataset.user_tokens, cfg.n_shards, cfg.seed)[3])
        target = shard_dir(adapters_root(ws), s)
        shutil.rmtree(target)
        shutil.copytree(shard_dir(before / "artifacts" / "adapters", s), target)


class TestCandidateSourceStage(BuiltIn):
    stage_name = "candidate-source"

    def versions(self, ws: Workspace) -> list[int]:
        return [load_model(ws.root / "artifacts" / "candidates" / "bpr.pt").ledger_version]

    def plant(self, ws: Workspace, before: Path) -> None:
        """The candidate source trained on the user's data restored."""
        src = before / "artifacts" / "candidates" / "bpr.pt"
        shutil.copy(src, ws.root / "artifacts" / "candidates")


class TestCheckpointStage(BuiltIn):
    stage_name = "checkpoints"

    def versions(self, ws: Workspace) -> list[int]:
        m = load_model(checkpoint_path(ws, "bpr"))
        assert m.extra["cf_method"] in ("train", "retrain") and m.extra["exact"]
        return [m.ledger_version]

    def plant(self, ws: Workspace, before: Path) -> None:
        """The forgotten user's trained embedding row written back into the retrained
        checkpoint (which keeps its ledger version and records; re-registered so its hash
        matches)."""
        path = checkpoint_path(ws, "bpr")
        new, old = load_model(path), load_model(before / "artifacts" / "models" / "bpr.pt")
        u = ws.dataset.user_index(forgotten_user(ws))
        with torch.no_grad():
            new.user_emb.weight[u] = old.user_emb.weight[u]
        with ws.ledger() as led:
            save_checkpoint(led, new, path, "model:bpr", new.ledger_version, dict(new.extra))


class TestBlendStage(BuiltIn):
    stage_name = "blend"

    def versions(self, ws: Workspace) -> list[int]:
        with ws.ledger() as led:
            reg = [a["ledger_version"] for a in led.artifacts() if a["kind"] == "served-blend"]
        return [json.loads(blend_path(ws).read_text())["ledger_version"], *reg]

    def plant(self, ws: Workspace, before: Path) -> None:
        """The blend fitted on the forgotten user's VALID data restored."""
        shutil.copy(before / "artifacts" / "adapters" / "blend.json", blend_path(ws))


class TestServedLogStage(BuiltIn):
    stage_name = "served"
    current = False  # the log keeps lists served at older versions

    def versions(self, ws: Workspace) -> list[int]:
        return [e["ledger_version"] for e in served.read_log(ws)]

    def plant(self, ws: Workspace, before: Path) -> None:
        """A list shown to the forgotten user after the request."""
        with ws.ledger() as led:
            v = led.version
        served.log_served(ws, forgotten_user(ws), [str(ws.dataset.item_tokens[0])], v, "planted")


class TestRunsStage(BuiltIn):
    stage_name = "runs"

    def versions(self, ws: Workspace) -> list[int]:
        from llmrec.forget.stages.runs import SCRUBBED_AT, result_files

        return [json.loads(p.read_text())[SCRUBBED_AT] for p in result_files(ws)]

    def plant(self, ws: Workspace, before: Path) -> None:
        """The run's per-user rows as they were before the request (the user named)."""
        shutil.copy(before / "runs" / "compare-1" / "results.json", ws.root / "runs" / "compare-1")


CLASSES = [TestRetrievalStage, TestAdapterStage, TestCandidateSourceStage, TestCheckpointStage]
CLASSES += [TestBlendStage, TestRunsStage, TestServedLogStage]
NAMES = [c.stage_name for c in CLASSES]


def test_every_built_in_stage_has_a_contract_class():
    builtin = [s.name for s in registered() if type(s).__module__.startswith("llmrec.")]
    assert sorted(builtin) == sorted(NAMES)


# --------------------------------------------------------------------- one ledger read
def test_one_forget_opens_the_ledger_once(every_artifact, tmp_path, monkeypatch, capsys):
    """Acceptance: ``llmrec forget`` of one user request (4 adapter shards, a store, a
    candidate source, a checkpoint, a served log) opens the ledger once, reads its entries
    once and folds them into retained views once."""
    from collections import Counter

    from llmrec.data.ledger import Ledger
    from llmrec.data.retained import RetainedView

    shutil.copytree(every_artifact / "before", tmp_path / "ws", symlinks=True)
    ws = Workspace(tmp_path / "ws")
    req = tmp_path / "r.jsonl"
    req.write_text(json.dumps({"kind": "user", "users": [forgotten_user(ws)]}) + "\n")
    calls: Counter = Counter()

    def spy(owner, name: str, classmethod_: bool = False) -> None:
        orig = getattr(owner, name)

        def wrapper(*a, **k):
            calls[name] += 1
            return orig(*(a[1:] if classmethod_ else a), **k)

        monkeypatch.setattr(owner, name, classmethod(wrapper) if classmethod_ else wrapper)

    for name in ("__init__", "entries", "retained_view"):
        spy(Ledger, name)
    spy(Workspace, "view")
    spy(RetainedView, "build", classmethod_=True)
    spy(RetainedView, "snapshots", classmethod_=True)
    assert main(["forget", "--request", str(req), "--workspace", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert all(f"stage {s}: applied versions [1]" in out for s in NAMES), out
    assert calls["__init__"] == 1 and calls["entries"] == 1 and calls["snapshots"] == 1, calls
    assert calls["view"] == calls["retained_view"] == calls["build"] == 0, calls
    monkeypatch.undo()
    res = run_audit(ws)
    assert res["ok"], res["violations"]


def test_audit_opens_the_ledger_once(every_artifact, tmp_path, monkeypatch):
    """``llmrec audit`` hands every stage the same context: one ledger handle, one fold."""
    from collections import Counter

    from llmrec.data.ledger import Ledger
    from llmrec.data.retained import RetainedView

    shutil.copytree(every_artifact, tmp_path / "copy", symlinks=True)
    ws = Workspace(tmp_path / "copy" / "ws")
    calls: Counter = Counter()
    for owner, name in ((Ledger, "__init__"), (Ledger, "entries"), (Workspace, "view")):
        orig = getattr(owner, name)

        def wrapper(*a, _orig=orig, _name=name, **k):
            calls[_name] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(owner, name, wrapper)
    snapshots = RetainedView.snapshots

    def counted(cls, *a, **k):
        calls["snapshots"] += 1
        return snapshots(*a, **k)

    monkeypatch.setattr(RetainedView, "snapshots", classmethod(counted))
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    assert calls == Counter({"__init__": 1, "entries": 1, "snapshots": 1}), calls
