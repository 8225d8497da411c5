"""The contract every forget stage keeps (docs/design.md §2.2), one matrix over
:data:`llmrec.forget.registry.ALL_STAGES`.

On a small workspace holding one artifact of every family, after a user request is forgotten:

* applying a stage again at the same ledger version changes no file (byte-identical);
* every artifact records the ledger version it reflects;
* the stage's audit passes, and ``llmrec audit`` shows the stage by name;
* a forgotten record planted back into the artifact is found by the stage's own audit and
  ``llmrec audit`` fails naming the stage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget.audit import run_audit
from llmrec.forget.registry import ALL_STAGES, select
from llmrec.forget.runner import forget
from llmrec.forget.stage import StageContext
from llmrec.forget.stages.checkpoints import record_extra, save_checkpoint
from llmrec.llm.adapters import adapters_root, load_config, shard_dir, tune_adapters
from llmrec.llm.shards import shard_of
from llmrec.models import load_model
from llmrec.models.training import checkpoint_path, retained_data, train_model
from llmrec.serving import served_log as served
from llmrec.serving.blend import BlendFit, blend_path, fit_blend, write_blend
from llmrec.serving.cragru import default_lm_dir
from llmrec.workspace import Workspace
from retrieval import sources
from retrieval.store import RetrievalStore
from tests.llm.test_llm_fixtures import adapter_config, small_workspace, tiny_lm

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
    return ws


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """``ws``: every artifact after one user request; ``before``: a copy taken before it."""
    root = tmp_path_factory.mktemp("stages")
    ws = build_all(root)
    shutil.copytree(ws.root, root / "before", symlinks=True)
    forget(ws, [ForgetRequest("user", users=(forgotten_user(ws),))])
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    return root


@pytest.fixture()
def copy(built, tmp_path) -> tuple[Workspace, Path]:
    shutil.copytree(built, tmp_path / "copy", symlinks=True)
    return Workspace(tmp_path / "copy" / "ws"), tmp_path / "copy" / "before"


def digest(ws: Workspace) -> dict[str, str]:
    """sha256 of every file under ``artifacts/`` (lock files aside)."""
    out = {}
    for p in sorted((ws.root / "artifacts").rglob("*")):
        if p.is_file() and not p.name.endswith(".lock") and p.name != ".lock":
            out[str(p.relative_to(ws.root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------- per-stage knowledge
def _store_versions(ws: Workspace) -> list[int]:
    man = json.loads(RetrievalStore.manifest_path(ws).read_text())
    return [man["ledger_version"]]


def _registered_versions(kind: str) -> Callable[[Workspace], list[int]]:
    def versions(ws: Workspace) -> list[int]:
        with ws.ledger() as led:
            return [a["ledger_version"] for a in led.artifacts() if a["kind"] == kind]

    return versions


def _source_versions(ws: Workspace) -> list[int]:
    return [load_model(ws.root / "artifacts" / "candidates" / "bpr.pt").ledger_version]


def _checkpoint_versions(ws: Workspace) -> list[int]:
    m = load_model(checkpoint_path(ws, "bpr"))
    assert m.extra["cf_method"] in ("train", "retrain") and m.extra["exact"]
    return [m.ledger_version]


def _served_versions(ws: Workspace) -> list[int]:
    return [e["ledger_version"] for e in served.read_log(ws)]


def _plant_counts(ws: Workspace, before: Path) -> None:
    """The co-occurrence counts of before the request (the user's pairs counted) restored."""
    shutil.copy(before / "artifacts" / "retrieval" / "counts.npy", RetrievalStore.load(ws).root)


def _plant_adapter(ws: Workspace, before: Path) -> None:
    """The forgotten user's shard adapter, tuned on the user's data, restored."""
    cfg = load_config(ws)
    s = int(shard_of(ws.dataset.user_tokens, cfg.n_shards, cfg.seed)[3])
    target = shard_dir(adapters_root(ws), s)
    shutil.rmtree(target)
    shutil.copytree(shard_dir(before / "artifacts" / "adapters", s), target)


def _plant_source(ws: Workspace, before: Path) -> None:
    """The candidate source trained on the user's data restored."""
    shutil.copy(
        before / "artifacts" / "candidates" / "bpr.pt", ws.root / "artifacts" / "candidates"
    )


def _plant_checkpoint(ws: Workspace, before: Path) -> None:
    """The forgotten user's trained embedding row written back into the retrained checkpoint
    (which keeps its ledger version and records; re-registered so its hash matches)."""
    path = checkpoint_path(ws, "bpr")
    new, old = load_model(path), load_model(before / "artifacts" / "models" / "bpr.pt")
    u = ws.dataset.user_index(forgotten_user(ws))
    with torch.no_grad():
        new.user_emb.weight[u] = old.user_emb.weight[u]
    with ws.ledger() as led:
        save_checkpoint(led, new, path, "model:bpr", new.ledger_version, dict(new.extra))


def _blend_versions(ws: Workspace) -> list[int]:
    file = json.loads(blend_path(ws).read_text())["ledger_version"]
    return [file, *_registered_versions("served-blend")(ws)]


def _plant_blend(ws: Workspace, before: Path) -> None:
    """The blend fitted on the forgotten user's VALID data restored."""
    shutil.copy(before / "artifacts" / "adapters" / "blend.json", blend_path(ws))


def _plant_served(ws: Workspace, before: Path) -> None:
    """A list shown to the forgotten user after the request."""
    with ws.ledger() as led:
        v = led.version
    served.log_served(ws, forgotten_user(ws), [str(ws.dataset.item_tokens[0])], v, "planted")


@dataclass(frozen=True)
class Spec:
    versions: Callable[[Workspace], list[int]]
    plant: Callable[[Workspace, Path], None]
    current: bool = True  # every recorded version is the newest (the served log: at most)


SPECS = {
    "retrieval": Spec(_store_versions, _plant_counts),
    "adapters": Spec(_registered_versions("lora-adapter"), _plant_adapter),
    "candidate-source": Spec(_source_versions, _plant_source),
    "checkpoints": Spec(_checkpoint_versions, _plant_checkpoint),
    "blend": Spec(_blend_versions, _plant_blend),
    "served": Spec(_served_versions, _plant_served, current=False),
}
NAMES = [s.name for s in ALL_STAGES]


def test_every_stage_has_a_contract_spec():
    assert sorted(SPECS) == sorted(NAMES)


def _context(ws: Workspace):
    led = ws.ledger()
    return led, StageContext.open(ws, led)


@pytest.mark.parametrize("name", NAMES)
def test_apply_again_changes_nothing(copy, name):
    ws, _ = copy
    before = digest(ws)
    led, ctx = _context(ws)
    with led:
        select(name)[0].apply(ctx)
    assert digest(ws) == before


@pytest.mark.parametrize("name", NAMES)
def test_artifacts_record_the_ledger_version(copy, name):
    ws, _ = copy
    with ws.ledger() as led:
        newest = led.version
    got = SPECS[name].versions(ws)
    assert got and newest == 1
    if SPECS[name].current:
        assert set(got) == {newest}, got
    else:
        assert all(isinstance(v, int) and 0 <= v <= newest for v in got), got


@pytest.mark.parametrize("name", NAMES)
def test_audit_passes_and_names_the_stage(copy, name, capsys):
    ws, _ = copy
    led, ctx = _context(ws)
    with led:
        rep = select(name)[0].audit(ctx)
    assert rep.findings == [] and rep.artifacts and rep.status == "clean", rep
    assert main(["audit", "--workspace", str(ws.root)]) == 0
    assert f"stage {name}: clean" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_audit_finds_a_planted_forgotten_record(copy, name, capsys):
    ws, before = copy
    SPECS[name].plant(ws, before)
    led, ctx = _context(ws)
    with led:
        rep = select(name)[0].audit(ctx)
    assert rep.findings and rep.status == "violation", rep
    assert main(["audit", "--workspace", str(ws.root)]) == 1
    assert f"stage {name}: violation" in capsys.readouterr().out


# --------------------------------------------------------------------- one ledger read
def test_one_forget_opens_the_ledger_once(built, tmp_path, monkeypatch, capsys):
    """Acceptance: ``llmrec forget`` of one user request (4 adapter shards, a store, a
    candidate source, a checkpoint, a served log) opens the ledger once, reads its entries
    once and folds them into retained views once."""
    from collections import Counter

    from llmrec.data.ledger import Ledger
    from llmrec.data.retained import RetainedView

    shutil.copytree(built / "before", tmp_path / "ws", symlinks=True)
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


def test_audit_opens_the_ledger_once(copy, monkeypatch):
    """``llmrec audit`` hands every stage the same context: one ledger handle, one fold."""
    from collections import Counter

    from llmrec.data.ledger import Ledger
    from llmrec.data.retained import RetainedView

    ws, _ = copy
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
