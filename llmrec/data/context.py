"""What every forget stage gets and reports, below the layers that do the stages' work.

:class:`StageContext` is built once per ``llmrec forget`` / ``llmrec audit`` (docs/design.md
§2.2): the workspace, the one open ledger and the retained views folded once (from the newest
snapshot: only the entries after it are parsed; a stage that needs history asks for a range with
:meth:`StageContext.entries_between`, so a read costs what its answer costs). The retrieval, adapter, candidate-source, served-log and checkpoint code all take it, so
every forget stage's ``apply(ctx)`` and ``audit(ctx)`` have one signature. :class:`StageAudit`
is what an audit reports; :func:`finding` is the one way to write a violation.
:class:`RederiveOptions` bounds ``llmrec audit --deep``, where a stage that opts in rebuilds
its artifacts from the retained data and compares them byte for byte (``rederive(ctx, options)``,
docs/design.md §2.4).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.data.ledger import Ledger, LedgerEntry
from llmrec.data.retained import RetainedView
from llmrec.workspace import Workspace


def finding(artifact: str, path: Path | str, problem: str) -> dict:
    """A violation: the ``artifact`` (a name the user recognises), its ``path``, the ``problem``."""
    return {"artifact": artifact, "path": str(path), "problem": problem}


@dataclass
class StageContext:
    """What every stage gets: the workspace, the ledger (``None`` when the workspace has none
    yet) and the retained view at :attr:`version`, plus views at older versions
    (:meth:`view_at`) for artifacts updated incrementally from the version they reflect.
    Ledger entries are read on demand, per range (:meth:`entries_between`)."""

    ws: Workspace
    ledger: Ledger | None
    version: int
    views: dict[int, RetainedView] = field(default_factory=dict)
    known: dict[int, LedgerEntry] = field(default_factory=dict)  # entries already parsed

    @classmethod
    def open(cls, ws: Workspace, ledger: Ledger | None, also: Iterable[int] = ()) -> StageContext:
        """Fold the newest view and the views at the versions ``also`` (e.g. the version the
        stages had reached) once, on from the newest valid snapshot
        (:meth:`Ledger.retained_views`: only the entries after it are read)."""
        ds = ws.dataset
        if ledger is None:
            return cls(ws, None, 0, {0: RetainedView.full(ds)})
        version = ledger.version
        at = {version} | {int(v) for v in also if 0 <= int(v) <= version}
        read: list[LedgerEntry] = []
        views = ledger.retained_views(ds, at, read=read)
        return cls(ws, ledger, version, views, {e.version: e for e in read})

    @property
    def view(self) -> RetainedView:
        """The retained view at :attr:`version` (built once, shared: never modify it)."""
        return self.views[self.version]

    def view_at(self, version: int) -> RetainedView:
        """The retained view at an older ``version`` (from the nearest one already folded,
        extended with the entries in between)."""
        version = int(version)
        if version in self.views:
            return self.views[version]
        if not 0 <= version <= self.version:
            raise ValueError(f"ledger version {version} is outside [0, {self.version}]")
        base = max((v for v in self.views if v <= version), default=None)
        view = self.views[base].copy() if base is not None else RetainedView.full(self.ws.dataset)
        view.fold((e.version, e.request) for e in self.entries_between(base or 0, version))
        view.version = version
        self.views[version] = view
        return view

    def entries_between(self, after: int, upto: int | None = None) -> list[LedgerEntry]:
        """Entries with ``after < version <= upto`` (default: :attr:`version`): those already
        parsed (:attr:`known`: the fold's, or just recorded), else read from the ledger now
        (only that range is parsed)."""
        upto = self.version if upto is None else int(upto)
        after = int(after)
        if self.ledger is None or upto <= after:
            return []
        if all(v in self.known for v in range(after + 1, upto + 1)):
            return [self.known[v] for v in range(after + 1, upto + 1)]
        out = self.ledger.entries(upto=upto, after=after)
        self.known.update((e.version, e) for e in out)
        return out


@dataclass
class StageAudit:
    """What a stage's audit found: ``findings`` (violations: dicts with ``artifact``,
    ``path``, ``problem``), the ``artifacts`` it examined, and those that reflect the ledger
    through an ``approximate`` method (dicts with ``artifact``, ``path``, ``method``) -- not a
    violation, but not the exact guarantee either."""

    findings: list[dict] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    approximate: list[dict] = field(default_factory=list)
    #: (re-derivation only) artifacts left unchecked: dicts with ``artifact``, ``path`` and
    #: ``reason`` (e.g. "approximate method finetune": not a function of the retained data)
    not_rederived: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``violation``, ``approximate``, ``clean`` or ``empty`` (no artifact of the family)."""
        if self.findings:
            return "violation"
        if self.approximate:
            return "approximate"
        return "clean" if self.artifacts else "empty"


@dataclass(frozen=True)
class RederiveOptions:
    """How far ``llmrec audit --deep`` goes: ``max_shards`` re-tunes at most that many LoRA
    shards (``None``: all), drawn with ``seed``; ``scratch``: a folder for re-derived files
    (default: a temporary one outside the workspace)."""

    max_shards: int | None = None
    seed: int = 2020
    scratch: Path | None = None


def not_rederived(artifact: str, path: Path | str, reason: str) -> dict:
    """An artifact a re-derivation leaves unchecked, and why (:attr:`StageAudit.not_rederived`)."""
    return {"artifact": artifact, "path": str(path), "reason": reason}
