"""The forget path: the runner that records requests in the ledger and brings every stage up to
date, the :class:`~llmrec.forget.stage.Stage` protocol and its registry, the stages themselves
(``stages/``) and the compliance audit."""
