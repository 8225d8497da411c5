"""The ``candidate-source`` forget stage: the CF candidate sources of the LLM path.

Layout: ``artifacts/candidates/<name>.pt`` (the model) and ``<name>.json`` (its record: model,
seed, recipe), registered in the ledger as :data:`retrieval.sources.KIND`. Exact sources are
retrained from scratch on the retained data; leaky (``-original``) ones are reported, never
updated. The work is :func:`retrieval.sources.apply` and :func:`retrieval.sources.audit`;
``llmrec audit --deep`` retrains every source and compares its weights
(:func:`retrieval.sources.rederive`).
"""

from __future__ import annotations

from llmrec.forget.registry import register_stage
from llmrec.forget.stage import Found, RederiveOptions, StageAudit, StageContext
from llmrec.workspace import Workspace


@register_stage
class CandidateSourceStage:
    """CF candidate sources of the LLM path: exact ones are retrained, leaky ones reported."""

    name = "candidate-source"
    order = 300

    def discover(self, ws: Workspace) -> list[Found]:
        from retrieval.sources import KIND

        folder = ws.root / "artifacts" / "candidates"
        return [Found(f"{KIND}:{p.stem}", KIND, p) for p in sorted(folder.glob("*.pt"))]

    def apply(self, ctx: StageContext) -> dict:
        from retrieval.sources import apply

        return apply(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        from retrieval.sources import audit, registered

        names = [a["name"] for a in registered(ctx.ledger)]
        return StageAudit(audit(ctx), names)

    def rederive(self, ctx: StageContext, options: RederiveOptions) -> StageAudit:
        from retrieval.sources import rederive

        return rederive(ctx)
