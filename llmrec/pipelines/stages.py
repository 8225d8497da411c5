"""Forget stages: one object per artifact family, each able to ``apply`` and ``audit``.

A stage (docs/design.md §2.2) brings every artifact of its family to the ledger version of a
:class:`StageContext` (``apply``, idempotent) and checks them against it (``audit``). The
forget runner (:mod:`llmrec.pipelines.forget`) and ``llmrec audit``
(:mod:`llmrec.pipelines.audit`) iterate the same list, :data:`STAGES`, in its order; the
served log comes last, after every artifact that serves lists.

The context is built once per command: it holds the workspace, the one open ledger, the
ledger's entries (read once) and the retained views, folded once (:meth:`StageContext.open`).
Stages never open the ledger or rebuild a view themselves. Heavy modules (FAISS, torch,
transformers) are imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmrec.data.ledger import Ledger, LedgerEntry
from llmrec.data.retained import RetainedView
from llmrec.workspace import Workspace


@dataclass
class StageContext:
    """What every stage gets: the workspace, the ledger (``None`` when the workspace has none
    yet), its entries and the retained view at :attr:`version`, plus views at older versions
    (:meth:`view_at`) for artifacts updated incrementally from the version they reflect."""

    ws: Workspace
    ledger: Ledger | None
    entries: list[LedgerEntry]
    version: int
    views: dict[int, RetainedView] = field(default_factory=dict)

    @classmethod
    def open(cls, ws: Workspace, ledger: Ledger | None, also: Iterable[int] = ()) -> StageContext:
        """Read the ledger's entries once and fold them once into the newest view and the
        views at the versions ``also`` (e.g. the version the stages had reached)."""
        ds = ws.dataset
        if ledger is None:
            return cls(ws, None, [], 0, {0: RetainedView.full(ds)})
        entries = ledger.entries()
        version = entries[-1].version if entries else 0
        at = {version} | {int(v) for v in also if 0 <= int(v) <= version}
        views = RetainedView.snapshots(ds, [(e.version, e.request) for e in entries], at)
        return cls(ws, ledger, entries, version, views)

    @property
    def view(self) -> RetainedView:
        """The retained view at :attr:`version` (built once, shared: never modify it)."""
        return self.views[self.version]

    def view_at(self, version: int) -> RetainedView:
        """The retained view at an older ``version`` (from the nearest one already folded,
        extended with the entries in between; no ledger read)."""
        version = int(version)
        if version in self.views:
            return self.views[version]
        if not 0 <= version <= self.version:
            raise ValueError(f"ledger version {version} is outside [0, {self.version}]")
        base = max((v for v in self.views if v <= version), default=None)
        view = self.views[base].copy() if base is not None else RetainedView.full(self.ws.dataset)
        for e in self.entries:
            if (base or 0) < e.version <= version:
                view.apply(e.request, e.version)
        view.version = version
        self.views[version] = view
        return view

    def entries_between(self, after: int, upto: int | None = None) -> list[LedgerEntry]:
        """Entries with ``after < version <= upto`` (default: :attr:`version`)."""
        upto = self.version if upto is None else int(upto)
        return [e for e in self.entries if after < e.version <= upto]


@dataclass
class StageAudit:
    """What a stage's audit found: ``findings`` (violations: dicts with ``artifact``,
    ``path``, ``problem``), the ``artifacts`` it examined, and those that reflect the ledger
    through an ``approximate`` method (dicts with ``artifact``, ``path``, ``method``) -- not a
    violation, but not the exact guarantee either."""

    findings: list[dict] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    approximate: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``violation``, ``approximate``, ``clean`` or ``empty`` (no artifact of the family)."""
        if self.findings:
            return "violation"
        if self.approximate:
            return "approximate"
        return "clean" if self.artifacts else "empty"


@runtime_checkable
class Stage(Protocol):
    """One artifact family of the forget path."""

    name: str

    def apply(self, ctx: StageContext) -> dict:
        """Bring every artifact of the family to ``ctx.version``; idempotent. Returns details
        for the command's output."""
        ...

    def audit(self, ctx: StageContext) -> StageAudit:
        """Check every artifact of the family against ``ctx.view``."""
        ...


class RetrievalStage:
    """Retrieval stores (index, candidate statistics, clusters, embeddings): incremental."""

    name = "retrieval"

    def apply(self, ctx: StageContext) -> dict:
        from retrieval.forget import apply_stores

        return apply_stores(ctx.ws, ctx.ledger, ctx.view, ctx.view_at)

    def audit(self, ctx: StageContext) -> StageAudit:
        from retrieval.audit import audit
        from retrieval.forget import store_names

        names = store_names(ctx.ws, ctx.ledger)
        return StageAudit(
            audit(ctx.ws, ctx.view, ctx.ledger, names), [f"retrieval:{n}" for n in names]
        )


class AdapterStage:
    """Per-shard LoRA adapters: the shards whose training data changed are re-tuned."""

    name = "adapters"

    @staticmethod
    def _present(ctx: StageContext) -> bool:
        """Adapters tuned or registered here (checked before importing transformers)."""
        if (ctx.ws.root / "artifacts" / "adapters" / "config.json").is_file():
            return True
        arts = ctx.ledger.artifacts() if ctx.ledger is not None else []
        return any(a["kind"] == "lora-adapter" for a in arts)

    def apply(self, ctx: StageContext) -> dict:
        if not self._present(ctx):
            return {"skipped": "no adapters tuned in this workspace"}
        from llmrec.llm.adapters import load_config, tune_adapters

        if load_config(ctx.ws) is None:
            return {"skipped": "no adapters tuned in this workspace"}
        rep = tune_adapters(ctx.ws, version=ctx.version, view=ctx.view, ledger=ctx.ledger)
        return {"retuned": rep["retuned"], "untouched": rep["untouched"]}

    def audit(self, ctx: StageContext) -> StageAudit:
        if not self._present(ctx):
            return StageAudit()
        from llmrec.llm.adapters import load_config
        from llmrec.llm.audit import audit

        cfg = load_config(ctx.ws)
        shards = [] if cfg is None else [f"adapter/shard-{s:03d}" for s in range(cfg.n_shards)]
        return StageAudit(audit(ctx.ws, ctx.view, ctx.ledger), shards)


class CandidateSourceStage:
    """CF candidate sources of the LLM path: exact ones are retrained, leaky ones reported."""

    name = "candidate-source"

    def apply(self, ctx: StageContext) -> dict:
        from retrieval.sources import apply

        return apply(ctx.ws, ctx.view, ctx.ledger)

    def audit(self, ctx: StageContext) -> StageAudit:
        from retrieval.sources import audit, registered

        names = [a["name"] for a in registered(ctx.ledger)]
        return StageAudit(audit(ctx.ws, ctx.view, ctx.ledger), names)


class CheckpointStage:
    """Trained and unlearned CF checkpoints, updated by their configured method."""

    name = "checkpoints"

    def apply(self, ctx: StageContext) -> dict:
        from llmrec.pipelines.checkpoints import apply

        return apply(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        from llmrec.pipelines.checkpoints import audit

        return audit(ctx)


class ServedLogStage:
    """The served-recommendation log, scrubbed to the workspace's policy (last)."""

    name = "served"

    def apply(self, ctx: StageContext) -> dict:
        from llmrec.pipelines.served import scrub

        return scrub(ctx.ws, ctx.view, ctx.entries)

    def audit(self, ctx: StageContext) -> StageAudit:
        from llmrec.pipelines.served import audit, log_path

        path = log_path(ctx.ws)
        return StageAudit(
            audit(ctx.ws, ctx.view, ctx.entries), ["served-log"] if path.is_file() else []
        )


#: every stage, in the order they run (the served log last)
ALL_STAGES: tuple[Stage, ...] = (
    RetrievalStage(),
    AdapterStage(),
    CandidateSourceStage(),
    CheckpointStage(),
    ServedLogStage(),
)
#: the stages the forget runner and the audit iterate (tests may narrow it)
STAGES: tuple[Stage, ...] = ALL_STAGES


def select(*names: str) -> tuple[Stage, ...]:
    """The stages of :data:`ALL_STAGES` named ``names`` (in run order); ``KeyError`` for a
    name that is not a stage."""
    known = {s.name for s in ALL_STAGES}
    missing = set(names) - known
    if missing:
        raise KeyError(f"no forget stage {', '.join(sorted(missing))}; stages: {sorted(known)}")
    return tuple(s for s in ALL_STAGES if s.name in names)
