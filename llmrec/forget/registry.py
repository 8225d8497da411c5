"""Forget stages: one object per artifact family, each able to ``apply`` and ``audit``.

A stage (docs/design.md §2.2) brings every artifact of its family to the ledger version of a
:class:`StageContext` (``apply``, idempotent) and checks them against it (``audit``). The
forget runner (:mod:`llmrec.forget.runner`) and ``llmrec audit``
(:mod:`llmrec.forget.audit`) iterate the same list, :data:`STAGES`, in its order; the
served log comes last, after every artifact that serves lists.

The context is built once per command: it holds the workspace, the one open ledger, the
ledger's entries (read once) and the retained views, folded once (:meth:`StageContext.open`).
Stages never open the ledger or rebuild a view themselves. Heavy modules (FAISS, torch,
transformers) are imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

from llmrec.forget.stage import Stage, StageAudit, StageContext


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
        from llmrec.forget.stages.checkpoints import apply

        return apply(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        from llmrec.forget.stages.checkpoints import audit

        return audit(ctx)


class RunsStage:
    """Run folders: workspaces a run kept follow the ledger; result files lose forgotten
    users' per-user rows (:mod:`llmrec.forget.stages.runs`)."""

    name = "runs"

    def apply(self, ctx: StageContext) -> dict:
        from llmrec.forget.stages.runs import apply

        return apply(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        from llmrec.forget.stages.runs import audit

        return audit(ctx)


class ServedLogStage:
    """The served-recommendation log, scrubbed to the workspace's policy (last)."""

    name = "served"

    def apply(self, ctx: StageContext) -> dict:
        from llmrec.serving.served_log import scrub

        return scrub(ctx.ws, ctx.view, ctx.entries)

    def audit(self, ctx: StageContext) -> StageAudit:
        from llmrec.serving.served_log import audit, log_path

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
    RunsStage(),
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
