"""The ``served`` forget stage: the served-recommendation log, scrubbed to the workspace's
forget policy. It runs last, after every stage whose artifacts serve lists.

Layout: ``artifacts/served/log.jsonl``, one served list per line with the ledger version it
was served at. The work is :func:`llmrec.serving.served_log.scrub_log` and
:func:`llmrec.serving.served_log.audit`.
"""

from __future__ import annotations

from llmrec.forget.registry import LAST, register_stage
from llmrec.forget.stage import Found, StageAudit, StageContext
from llmrec.serving.served_log import LOG, audit, log_path, scrub_log
from llmrec.workspace import Workspace


@register_stage
class ServedLogStage:
    """The served-recommendation log, scrubbed to the workspace's policy (last)."""

    name = "served"
    order = LAST
    follows_policy = True  # the policy decides what may stay in the log

    def discover(self, ws: Workspace) -> list[Found]:
        path = log_path(ws)
        return [Found(LOG, LOG, path)] if path.is_file() else []

    def apply(self, ctx: StageContext) -> dict:
        return scrub_log(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        return StageAudit(audit(ctx), [LOG] if log_path(ctx.ws).is_file() else [])
