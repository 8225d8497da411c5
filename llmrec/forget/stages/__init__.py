"""The built-in forget stages, one module per artifact family; each module owns its artifacts'
layout (``discover``), their update (``apply``) and their check (``audit``), and registers its
stage with :func:`llmrec.forget.registry.register_stage`. Importing this package registers them
all; a new built-in stage is one new module here plus its line below."""

from llmrec.forget.stages import (  # noqa: F401 - imported to register the stages
    adapters,
    blend,
    candidate_source,
    checkpoints,
    retrieval,
    runs,
    served_log,
)
