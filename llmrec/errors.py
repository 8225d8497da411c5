"""User-facing errors. The CLI prints ``str(err)`` on one line and exits non-zero, no traceback."""


class LlmrecError(Exception):
    """Base class of every error caused by the user's input or environment."""

    exit_code = 2


class DataError(LlmrecError):
    """A dataset is missing or malformed."""


class RequestError(LlmrecError):
    """A forget request is malformed or names unknown ids."""


class LedgerError(LlmrecError):
    """The forget ledger is unusable (wrong dataset, corrupt file)."""


class ArtifactError(LlmrecError):
    """An artifact is missing or stale with respect to the ledger."""
