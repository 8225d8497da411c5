"""The forget path: the runner that records requests in the ledger and brings every stage up to
date, the :class:`~llmrec.forget.stage.Stage` protocol and its registry, the stages themselves
(``stages/``, registered on import here) and the compliance audit."""

from llmrec.forget import stages as _stages  # noqa: F401 - registers the built-in stages
