"""Progress on stderr for long work: tqdm bars that never go quiet for long.

The CLI turns progress on (:func:`configure`; ``--quiet`` keeps it off); a library caller gets
none unless it asks. A :class:`Progress` bar is a tqdm bar on stderr whose display is refreshed
by a heartbeat every :data:`HEARTBEAT_S` seconds, so that elapsed time keeps moving while one
step (an epoch, a user, a phase) takes long. :func:`phase` wraps a step with no natural count.
stdout is never written to, so ``--json`` output stays strict JSON.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

#: seconds between two refreshes of an open bar at the latest
HEARTBEAT_S = 10.0

_state = {"enabled": False}


def configure(enabled: bool) -> None:
    """Show progress (True) or not, process-wide."""
    _state["enabled"] = bool(enabled)


def enabled() -> bool:
    return _state["enabled"]


class Progress(tqdm):
    """A tqdm bar on stderr, disabled unless progress is on, refreshed by a heartbeat."""

    def __init__(self, iterable: Iterable | None = None, *args, **kwargs) -> None:
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("dynamic_ncols", True)
        kwargs.setdefault("leave", True)
        kwargs["disable"] = kwargs.get("disable", False) or not _state["enabled"]
        super().__init__(iterable, *args, **kwargs)
        self._beat_stop = threading.Event()
        if not self.disable:
            beat = threading.Thread(target=self._beat, daemon=True, name="progress-heartbeat")
            beat.start()

    def _beat(self) -> None:
        while not self._beat_stop.wait(HEARTBEAT_S):
            try:
                self.refresh()
            except (ValueError, OSError):  # stderr closed under us
                return

    def close(self) -> None:
        if hasattr(self, "_beat_stop"):
            self._beat_stop.set()
        super().close()


def bar(iterable: Iterable | None = None, desc: str = "", **kwargs) -> Progress:
    """A :class:`Progress` bar over ``iterable`` (or one updated by hand with ``total=``)."""
    return Progress(iterable, desc=desc, **kwargs)


@contextmanager
def phase(desc: str) -> Iterator[Progress]:
    """A named step with no natural count: its elapsed time shown until it ends."""
    p = Progress(total=None, desc=desc, bar_format="{desc}: {elapsed}{postfix}")
    try:
        yield p
    finally:
        p.close()


def say(message: str) -> None:
    """One progress line on stderr (nothing when progress is off)."""
    if _state["enabled"]:
        tqdm.write(message, file=sys.stderr)
