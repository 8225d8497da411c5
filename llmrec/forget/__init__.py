"""The forget path: the runner that records requests in the ledger and brings every stage up to
date, the :class:`~llmrec.forget.stage.Stage` protocol and its registry, the stages themselves
(``stages/``, registered on import here) and the compliance audit."""

from llmrec.forget import stages as _stages  # noqa: F401 - registers the built-in stages
from llmrec.forget.audit import run_audit
from llmrec.forget.registry import register_stage, registered, unregister_stage
from llmrec.forget.runner import forget, resume, set_policy
from llmrec.forget.stage import Found, Stage, StageAudit, StageContext, finding

__all__ = [
    "Found",
    "Stage",
    "StageAudit",
    "StageContext",
    "finding",
    "forget",
    "register_stage",
    "registered",
    "resume",
    "run_audit",
    "set_policy",
    "unregister_stage",
]
