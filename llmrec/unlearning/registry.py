"""The one registry of unlearning methods: classes by their CLI name.

A method is one file: a :class:`~llmrec.unlearning.method.Method` subclass decorated with
:func:`register_method` -- an :class:`~llmrec.unlearning.base.Unlearner` of a CF model (family
``embedding``, imported by ``llmrec/unlearning/__init__.py``) or an LLM-path method (family
``llm``, registered by :mod:`llmrec.experiments.compare.llm`). Everything that offers
methods (``llmrec unlearn``, its help, the comparison harness, the contract tests) reads this
registry, so a registered class is everywhere at once::

    @register_method
    class MyMethod(Unlearner):
        name = "my-method"
        handles = ("user", "interactions")

        def _unlearn(self, model, task, monitor): ...

Registration order is the order of :func:`method_names` (the package imports the methods in
the order it lists them). :func:`unregister_method` exists for tests that register a method
for the duration of a test.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

from llmrec.data.requests import KINDS
from llmrec.errors import LlmrecError
from llmrec.unlearning.method import FAMILIES, Method

U = TypeVar("U", bound=type[Method])

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_REGISTRY: dict[str, type[Method]] = {}

#: read-only live view of the registry: name -> class
METHODS: Mapping[str, type[Method]] = MappingProxyType(_REGISTRY)


class UnknownMethodError(LlmrecError, ValueError):
    """No unlearning method is registered under that name."""


def register_method(cls: U) -> U:
    """Class decorator: register a :class:`Method` subclass under its own ``cls.name``.

    Refuses (``TypeError``) what is not a concrete ``Method`` subclass, and (``ValueError``)
    a family other than those of :data:`~llmrec.unlearning.method.FAMILIES`,
    a name the class does not set itself, a name that is not lower-case words joined by ``-``,
    ``handles`` naming no known request kind, or a name another class already holds (the same
    class registered again, e.g. by a module reload, replaces itself).
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method takes a Method subclass, got {cls!r}")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TypeError(f"{cls.__qualname__} is abstract (does not implement {missing})")
    name = cls.__dict__.get("name")
    if not isinstance(name, str):
        raise ValueError(f"{cls.__qualname__} must set its own class attribute 'name'")
    if not _NAME.fullmatch(name):
        raise ValueError(f"method name {name!r} must be lower-case words joined by '-'")
    if cls.family not in FAMILIES:
        raise ValueError(
            f"{cls.__qualname__}.family must be one of {', '.join(FAMILIES)}, got {cls.family!r}"
        )
    handles = tuple(cls.handles)
    bad = sorted(set(handles) - set(KINDS))
    if not handles or bad:
        raise ValueError(
            f"{cls.__qualname__}.handles must name request kinds out of {', '.join(KINDS)}, "
            f"got {handles!r}"
        )
    held = _REGISTRY.get(name)
    if held is not None and _identity(held) != _identity(cls):
        raise ValueError(
            f"method name {name!r} is already registered by {held.__module__}.{held.__qualname__}"
        )
    _REGISTRY[name] = cls
    return cls


def _identity(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def unregister_method(name: str) -> type[Method]:
    """Remove a method from the registry (for tests); returns its class."""
    cls = get_method(name)
    del _REGISTRY[name]
    return cls


def get_method(name: str, family: str | None = None) -> type[Method]:
    """The class registered under ``name`` (of ``family`` if given); an
    :class:`UnknownMethodError` names the known ones."""
    cls = _REGISTRY.get(name)
    if cls is None or (family is not None and cls.family != family):
        known = ", ".join(method_names(family)) or "none"
        raise UnknownMethodError(f"unknown method {name!r} (known: {known})")
    return cls


def method_names(family: str | None = None) -> tuple[str, ...]:
    """Every registered method name (of ``family`` if given), in registration order."""
    return tuple(n for n, c in _REGISTRY.items() if family is None or c.family == family)


def make_unlearner(name: str, **params) -> Method:
    """An embedding unlearner by its method name with ``params`` passed to its constructor."""
    return get_method(name, "embedding")(**params)
