"""Serving backends by name: ``hf`` (Hugging Face + peft) built in, others registered with
:func:`register_backend` (one new module: its factory builds the backend from a
:class:`~llmrec.llm.backends.base.BackendSpec`)."""

from __future__ import annotations

from collections.abc import Callable

from llmrec.errors import ArtifactError
from llmrec.llm.backends.base import BackendSpec, RankBackend

BackendFactory = Callable[[BackendSpec], RankBackend]

DEFAULT_BACKEND = "hf"


def _hf(spec: BackendSpec) -> RankBackend:
    from llmrec.llm.backends.hf import HFBackend  # imported when chosen: torch is heavy

    return HFBackend.from_spec(spec)


_BUILTIN: dict[str, BackendFactory] = {"hf": _hf}
_REGISTERED: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> BackendFactory:
    """Make ``factory`` the backend called ``name`` (``llmrec recommend --backend NAME``)."""
    if name in _BUILTIN:
        raise ValueError(f"backend {name!r} is built in")
    _REGISTERED[name] = factory
    return factory


def unregister_backend(name: str) -> BackendFactory:
    """Remove a registered backend (for tests); returns its factory."""
    if name not in _REGISTERED:
        raise ArtifactError(f"no registered serving backend {name!r}")
    return _REGISTERED.pop(name)


def backend_names() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTERED})


def create_backend(name: str, spec: BackendSpec) -> RankBackend:
    """The backend ``name`` built from ``spec`` (one clear error for an unknown name)."""
    factory = _REGISTERED.get(name) or _BUILTIN.get(name)
    if factory is None:
        raise ArtifactError(
            f"unknown serving backend {name!r}; choose one of {', '.join(backend_names())}"
        )
    return factory(spec)
