"""The contract every forget stage keeps (docs/design.md §2.2), as a pytest mixin a stage's
author runs: the built-in stages' tests (``tests/forget/test_stage_contract.py``) and a
plug-in's use the same checks.

Subclass :class:`StageContract` in a test module (the class name starting with ``Test``), name
the stage and say how to build its artifacts, forget something, read the versions they record
and put a forgotten record back::

    class TestMyStage(StageContract):
        stage_name = "my-artifacts"

        def build(self, root):           # a workspace at root/"ws", the artifacts at ledger v0
            ws = small_workspace(root); ...; return ws

        def request(self, ws):           # what is forgotten once the artifacts are built
            return ForgetRequest("user", users=(str(ws.dataset.user_tokens[3]),))

        def versions(self, ws):          # the ledger versions the artifacts record
            ...

        def plant(self, ws, before):     # restore a forgotten record (``before``: the
            ...                          # workspace copied before the request)

The stage must be registered while the tests run (a plug-in registers it on import or with
:func:`llmrec.forget.registry.register_stage`). Checked, after the request is forgotten by
``llmrec forget``'s runner: the stage is registered with ``discover``, ``apply`` and ``audit``
and runs before the served log; ``discover`` finds its artifacts; applying again at the same
ledger version changes no file (byte-identical); every artifact records the ledger version it
reflects (:attr:`StageContract.current`: the newest one); the stage's audit passes and
``llmrec audit`` shows it by name; a forgotten record planted back is found by the stage's
audit and ``llmrec audit`` fails naming the stage; a stage with the optional ``rederive`` hook
(``llmrec audit --deep``) re-derives the current artifacts without a finding and writes nothing
in the workspace.

The workspace is built once per class (fixture ``built``; override it to share one build
between several classes) and copied for every test.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget import registry
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget
from llmrec.forget.stage import Rederivable, RederiveOptions, Stage, StageContext
from llmrec.workspace import Workspace

__all__ = ["StageContract", "artifact_digest", "forget_after_copy"]


def artifact_digest(ws: Workspace) -> dict[str, str]:
    """sha256 of every file under the workspace's ``artifacts/`` (lock files aside)."""
    out = {}
    for p in sorted((ws.root / "artifacts").rglob("*")):
        if p.is_file() and not p.name.endswith(".lock") and p.name != ".lock":
            out[str(p.relative_to(ws.root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def forget_after_copy(ws: Workspace, request: ForgetRequest) -> Path:
    """Copy the workspace's folder (``root/ws``, its data beside it) to ``root/before``, then
    forget ``request`` in ``ws`` and check that ``llmrec audit`` passes; returns ``root``."""
    root = ws.root.parent
    assert ws.root.name == "ws", "build the workspace at root/'ws' (its data beside it)"
    shutil.copytree(ws.root, root / "before", symlinks=True)
    forget(ws, [request])
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    return root


class StageContract:
    """The stage contract as pytest tests (module docstring): subclass it as ``Test...``."""

    #: the registered stage's name
    stage_name: str = ""
    #: every version an artifact records is the ledger's newest (a log may hold older ones)
    current: bool = True

    # ------------------------------------------------------------------ the author's part
    def build(self, root: Path) -> Workspace:
        """A workspace at ``root/"ws"`` holding the stage's artifacts at ledger v0."""
        raise NotImplementedError

    def request(self, ws: Workspace) -> ForgetRequest:
        """The request forgotten once the artifacts are built."""
        raise NotImplementedError

    def versions(self, ws: Workspace) -> list[int]:
        """The ledger versions the stage's artifacts record."""
        raise NotImplementedError

    def plant(self, ws: Workspace, before: Path) -> None:
        """Put a forgotten record back into an artifact (``before``: the workspace as it was
        before the request)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(scope="class")
    @classmethod
    def built(cls, tmp_path_factory) -> Path:
        """The folder holding ``ws`` (after the request) and ``before`` (a copy taken before)."""
        author = cls()
        ws = author.build(tmp_path_factory.mktemp("stage"))
        return forget_after_copy(ws, author.request(ws))

    @pytest.fixture()
    def copy(self, built: Path, tmp_path: Path) -> tuple[Workspace, Path]:
        """A fresh copy of the built workspace and of its ``before`` copy."""
        shutil.copytree(built, tmp_path / "copy", symlinks=True)
        return Workspace(tmp_path / "copy" / "ws"), tmp_path / "copy" / "before"

    @property
    def stage(self) -> Stage:
        return registry.select(self.stage_name)[0]

    # ------------------------------------------------------------------ the contract
    def test_stage_is_registered_and_runs_before_the_served_log(self):
        stage = self.stage
        assert isinstance(stage, Stage), f"{stage!r} lacks part of the Stage protocol"
        names = [s.name for s in registry.registered()]
        assert self.stage_name in names
        if self.stage_name != "served":
            assert stage.order < registry.LAST, "the served log must run last"

    def test_discover_finds_the_artifacts(self, copy):
        ws, _ = copy
        found = self.stage.discover(ws)
        assert found, f"stage {self.stage_name}: discover found nothing"
        for f in found:
            assert f.path.exists() and f.problem is None and f.unusable is None, f

    def test_apply_again_changes_nothing(self, copy):
        ws, _ = copy
        before = artifact_digest(ws)
        with ws.ledger() as led:
            self.stage.apply(StageContext.open(ws, led))
        assert artifact_digest(ws) == before

    def test_artifacts_record_the_ledger_version(self, copy):
        ws, _ = copy
        with ws.ledger() as led:
            newest = led.version
        got = self.versions(ws)
        assert got and newest >= 1, (got, newest)
        if self.current:
            assert set(got) == {newest}, got
        else:
            assert all(isinstance(v, int) and 0 <= v <= newest for v in got), got

    def test_audit_passes_and_names_the_stage(self, copy, capsys):
        ws, _ = copy
        with ws.ledger() as led:
            rep = self.stage.audit(StageContext.open(ws, led))
        assert rep.findings == [] and rep.artifacts and rep.status == "clean", rep
        assert main(["audit", "--workspace", str(ws.root)]) == 0
        assert f"stage {self.stage_name}: clean" in capsys.readouterr().out

    def test_audit_finds_a_planted_forgotten_record(self, copy, capsys):
        ws, before = copy
        self.plant(ws, before)
        with ws.ledger() as led:
            rep = self.stage.audit(StageContext.open(ws, led))
        assert rep.findings and rep.status == "violation", rep
        assert main(["audit", "--workspace", str(ws.root)]) == 1
        assert f"stage {self.stage_name}: violation" in capsys.readouterr().out

    def test_rederive_matches_and_writes_nothing(self, copy):
        ws, _ = copy
        if not isinstance(self.stage, Rederivable):
            pytest.skip(f"stage {self.stage_name} has no rederive hook (llmrec audit --deep)")
        before = artifact_digest(ws)
        with ws.ledger() as led:
            rep = self.stage.rederive(StageContext.open(ws, led), RederiveOptions())
        assert rep.findings == [] and (rep.artifacts or rep.not_rederived), rep
        assert artifact_digest(ws) == before
