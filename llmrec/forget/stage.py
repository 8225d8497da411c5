"""The :class:`Stage` protocol every forget stage keeps (docs/design.md §2.2) and :class:`Found`,
what a stage's ``discover`` reports. What a stage gets and reports (:class:`StageContext`,
:class:`StageAudit`, :func:`finding`) lives in :mod:`llmrec.data.context`, below the layers
that do the stages' work, and is re-exported here. Stages are registered in
:mod:`llmrec.forget.registry`; the built-in ones are the modules of :mod:`llmrec.forget.stages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from llmrec.data.context import (
    RederiveOptions,
    StageAudit,
    StageContext,
    finding,
    not_rederived,
)
from llmrec.workspace import Workspace

__all__ = [
    "Found",
    "Rederivable",
    "RederiveOptions",
    "Stage",
    "StageAudit",
    "StageContext",
    "finding",
    "int_or_none",
    "not_rederived",
]


@dataclass(frozen=True)
class Found:
    """An artifact of a stage's family found on disk, whatever the ledger says.

    ``name``: its name in the ledger's registry (or the name findings use); ``kind``: its
    registry kind; ``claimed_version`` / ``claimed_head``: the ledger version and history its
    files say it reflects (``None``: it does not say). ``staged``: the stage updates only the
    artifacts the registry lists, so one missing there, or a registry row whose files are
    partly gone, blocks ``llmrec forget``. ``problem``: a defect visible from the files alone
    (an audit finding that blocks forget). ``unusable``: why the stage could not apply to it
    (blocks forget; the stage's own audit reports it in its words).
    """

    name: str
    kind: str
    path: Path
    claimed_version: int | None = None
    claimed_head: str | None = None
    staged: bool = False
    problem: str | None = None
    unusable: str | None = None


def int_or_none(v: object) -> int | None:
    """``v`` when it is an int (a version read from a JSON manifest), else ``None``."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


@runtime_checkable
class Stage(Protocol):
    """One artifact family of the forget path: it owns its artifacts' layout on disk.

    ``order`` places it among the stages (lower first; the served log runs last). A stage is
    registered with :func:`llmrec.forget.registry.register_stage`.
    """

    name: str
    order: int

    def discover(self, ws: Workspace) -> list[Found]:
        """The family's artifacts present in the workspace's files (cheap: no hashing, no
        ledger, no heavy imports)."""
        ...

    def apply(self, ctx: StageContext) -> dict:
        """Bring every artifact of the family to ``ctx.version``; idempotent. Returns details
        for the command's output."""
        ...

    def audit(self, ctx: StageContext) -> StageAudit:
        """Check every artifact of the family against ``ctx.view``."""
        ...


@runtime_checkable
class Rederivable(Protocol):
    """The optional hook of a stage whose artifacts are exact functions of the retained data
    (``llmrec audit --deep``, docs/design.md §2.4): ``rederive`` rebuilds them from the
    ledger's retained data at the version each claims, outside the workspace, and compares
    them byte for byte with what is on disk. A difference is a finding naming the artifact and
    what differed (so files replaced by pre-forget ones, hashes rewritten, are caught); an
    artifact it cannot rebuild exactly (an approximate method's output) goes to
    :attr:`StageAudit.not_rederived` with the reason. It writes nothing in the workspace."""

    def rederive(self, ctx: StageContext, options: RederiveOptions) -> StageAudit: ...
