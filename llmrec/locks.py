"""One inter-process lock: an exclusive POSIX advisory lock on a lock file.

Used wherever concurrent processes must not interleave on a workspace (the forget stages, the
retrieval store's writes, the served log and its scrubber). Without ``fcntl`` (non-POSIX) the lock
is a no-op: single-process use only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: single-process use
    fcntl = None  # type: ignore[assignment]


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder if absent) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)
