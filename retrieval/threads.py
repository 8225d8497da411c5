"""Run dense linear algebra on one BLAS thread.

The retrieval layer's dense products are small (catalogue x embedding dimension). On one thread
their results do not depend on the machine's thread count (a multi-threaded BLAS may split the
reductions differently), which exact-equivalence checks rely on, and they avoid OpenBLAS's
spinning worker threads, which on a busy machine slow products of this size 10-100x.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

F = TypeVar("F", bound=Callable)


@functools.lru_cache(maxsize=1)
def _controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController()


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Limit BLAS libraries to one thread inside the block (nesting is fine)."""
    ctl = _controller()
    if ctl is None:
        yield
        return
    with ctl.limit(limits=1, user_api="blas"):
        yield


def one_blas_thread(fn: F) -> F:
    """Decorator form of :func:`single_blas_thread`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_blas_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
