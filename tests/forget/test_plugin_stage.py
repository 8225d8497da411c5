"""A forget stage from outside llmrec, defined in this one module and nowhere else: an "item
audience" artifact (which retained users interacted with each item in training).

Registered in process (:func:`llmrec.forget.registry.register_stage`) or through the
``llmrec.stages`` entry point group of an installed package, ``llmrec forget`` applies it,
``llmrec audit`` checks it, and it passes the stage contract (:mod:`llmrec.testing.stages`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.data.split import TRAIN
from llmrec.forget import registry
from llmrec.forget.stage import Found, StageAudit, StageContext, finding
from llmrec.io import atomic_write_json, read_json_object
from llmrec.testing.fixtures import tiny_workspace
from llmrec.testing.stages import StageContract
from llmrec.workspace import Workspace

NAME = "toy-audience"


def audience_path(ws: Workspace) -> Path:
    return ws.root / "artifacts" / "toy" / "audience.json"


def audience(ws: Workspace, ctx: StageContext) -> dict[str, list[str]]:
    """Item token -> sorted tokens of the users with a retained train interaction with it."""
    ds = ws.dataset
    m = ws.split.mask(TRAIN, ctx.view.keep)
    out: dict[str, set[str]] = {}
    for u, i in zip(ds.inter_user[m], ds.inter_item[m]):
        out.setdefault(str(ds.item_tokens[i]), set()).add(str(ds.user_tokens[u]))
    return {k: sorted(v) for k, v in sorted(out.items())}


class ToyStage:
    """The item audiences, rebuilt from the retained view whenever the ledger moves."""

    name = NAME
    order = 450

    def discover(self, ws: Workspace) -> list[Found]:
        path = audience_path(ws)
        if not path.is_file():
            return []
        v = (read_json_object(path) or {}).get("ledger_version")
        return [Found(NAME, NAME, path, v if isinstance(v, int) else None)]

    def apply(self, ctx: StageContext) -> dict:
        path = audience_path(ctx.ws)
        if not path.is_file():
            return {"skipped": "no audience built"}
        old = read_json_object(path) or {}
        if old.get("ledger_version") == ctx.version:
            return {"updated": False}
        atomic_write_json(path, {"ledger_version": ctx.version, "audience": audience(ctx.ws, ctx)})
        return {"updated": True}

    def audit(self, ctx: StageContext) -> StageAudit:
        path = audience_path(ctx.ws)
        if not path.is_file():
            return StageAudit()
        rep = StageAudit(artifacts=[NAME])
        got = read_json_object(path) or {}
        if got.get("ledger_version") != ctx.version:
            rep.findings.append(finding(NAME, path, f"stale: ledger is at v{ctx.version}"))
        elif got.get("audience") != audience(ctx.ws, ctx):
            gone = {str(t) for t in ctx.ws.dataset.user_tokens[ctx.view.forgotten_users]}
            held = {u for us in got.get("audience", {}).values() for u in us} & gone
            rep.findings.append(
                finding(NAME, path, f"holds other users than the retained ones {sorted(held)}")
            )
        return rep


def build(root: Path) -> Workspace:
    """The tiny dataset's workspace with the audience built at ledger v0."""
    ws = tiny_workspace(root)
    path = audience_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ws.ledger() as led:
        ctx = StageContext.open(ws, led)
        atomic_write_json(path, {"ledger_version": 0, "audience": audience(ws, ctx)})
    return ws


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    """The stage registered in process for this module only."""
    registry.register_stage(ToyStage)
    yield
    registry.unregister_stage(NAME)


class TestToyStageContract(StageContract):
    stage_name = NAME

    def build(self, root: Path) -> Workspace:
        return build(root)

    def request(self, ws: Workspace) -> ForgetRequest:
        return ForgetRequest("user", users=("u1",))

    def versions(self, ws: Workspace) -> list[int]:
        return [json.loads(audience_path(ws).read_text())["ledger_version"]]

    def plant(self, ws: Workspace, before: Path) -> None:
        """The audiences of before the request (u1 among them), at the current version."""
        old = json.loads(audience_path(Workspace(before)).read_text())
        now = json.loads(audience_path(ws).read_text())
        atomic_write_json(audience_path(ws), {**old, "ledger_version": now["ledger_version"]})


def _forget_user(ws: Workspace, user: str, capsys) -> str:
    req = ws.root.parent / "r.jsonl"
    req.write_text(json.dumps({"kind": "user", "users": [user]}) + "\n")
    assert main(["forget", "--request", str(req), "--workspace", str(ws.root)]) == 0
    return capsys.readouterr().out


def test_llmrec_forget_applies_and_audit_checks_the_plugin_stage(tmp_path, capsys):
    ws = build(tmp_path)
    out = _forget_user(ws, "u2", capsys)
    assert f"stage {NAME}: applied versions [1]" in out, out
    got = json.loads(audience_path(ws).read_text())
    assert got["ledger_version"] == 1
    assert all("u2" not in users for users in got["audience"].values())
    assert main(["audit", "--workspace", str(ws.root)]) == 0
    assert f"stage {NAME}: clean (1 artifact(s))" in capsys.readouterr().out
    # the forgotten user written back: the audit fails naming the stage and the artifact
    got["audience"][next(iter(got["audience"]))].append("u2")
    atomic_write_json(audience_path(ws), got)
    assert main(["audit", "--workspace", str(ws.root)]) == 1
    out = capsys.readouterr().out
    assert f"stage {NAME}: violation" in out and f"VIOLATION {NAME}:" in out and "u2" in out


def test_an_interrupted_plugin_stage_is_resumed(tmp_path, capsys, monkeypatch):
    """A crash in the plug-in's apply leaves the request recorded and the stage pending;
    the next ``llmrec forget`` finishes it."""
    ws = build(tmp_path)

    def crash(self, ctx):
        raise OSError("disk full")

    monkeypatch.setattr(ToyStage, "apply", crash)
    req = tmp_path / "r.jsonl"
    req.write_text(json.dumps({"kind": "user", "users": ["u3"]}) + "\n")
    assert main(["forget", "--request", str(req), "--workspace", str(ws.root)]) != 0
    capsys.readouterr()
    assert main(["audit", "--workspace", str(ws.root)]) == 1
    assert f"stage:{NAME}" in capsys.readouterr().out
    monkeypatch.undo()
    assert main(["forget", "--workspace", str(ws.root)]) == 0
    assert f"stage {NAME}: applied versions [1]" in capsys.readouterr().out
    assert main(["audit", "--workspace", str(ws.root)]) == 0


def test_a_stage_from_an_installed_package_entry_point(tmp_path, capsys, monkeypatch):
    """An installed distribution listing the stage under the ``llmrec.stages`` entry point
    group: no import of it by anyone, ``llmrec forget`` loads and applies it."""
    registry.unregister_stage(NAME)
    dist = tmp_path / "site" / "toy_llmrec_stage-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-llmrec-stage\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[llmrec.stages]\ntoy = {__name__}:ToyStage\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        ws = build(tmp_path / "w")
        out = _forget_user(ws, "u4", capsys)
        assert f"stage {NAME}: applied versions [1]" in out, out
        assert main(["audit", "--workspace", str(ws.root)]) == 0
        assert f"stage {NAME}: clean" in capsys.readouterr().out
    finally:
        registry.register_stage(ToyStage)  # as the module fixture left it


def test_a_broken_plugin_is_one_line(tmp_path, capsys, monkeypatch):
    dist = tmp_path / "site" / "broken_stage-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-stage\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[llmrec.stages]\nbroken = no_such_module_xyz:Stage\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    ws = build(tmp_path / "w")
    assert main(["audit", "--workspace", str(ws.root)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken" in err[0] and "Traceback" not in err[0], err


def test_stages_are_in_order_and_the_served_log_is_last():
    names = [s.name for s in registry.registered()]
    assert names[-1] == "served" and names.index(NAME) < names.index("served")
    assert np.all(np.diff([s.order for s in registry.registered()]) >= 0)
