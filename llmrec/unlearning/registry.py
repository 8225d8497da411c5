"""The one registry of unlearning methods: classes by their CLI name.

A method is one file: an :class:`~llmrec.unlearning.base.Unlearner` subclass decorated with
:func:`register_method`, imported by ``llmrec/unlearning/__init__.py``. Everything that offers
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
from llmrec.unlearning.base import Unlearner

U = TypeVar("U", bound=type[Unlearner])

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_REGISTRY: dict[str, type[Unlearner]] = {}

#: read-only live view of the registry: name -> class
METHODS: Mapping[str, type[Unlearner]] = MappingProxyType(_REGISTRY)


class UnknownMethodError(LlmrecError, ValueError):
    """No unlearning method is registered under that name."""


def register_method(cls: U) -> U:
    """Class decorator: register an :class:`Unlearner` subclass under its own ``cls.name``.

    Refuses (``TypeError``) what is not a concrete ``Unlearner`` subclass, and (``ValueError``)
    a name the class does not set itself, a name that is not lower-case words joined by ``-``,
    ``handles`` naming no known request kind, or a name another class already holds (the same
    class registered again, e.g. by a module reload, replaces itself).
    """
    if not (isinstance(cls, type) and issubclass(cls, Unlearner)):
        raise TypeError(f"register_method takes an Unlearner subclass, got {cls!r}")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TypeError(f"{cls.__qualname__} is abstract (does not implement {missing})")
    name = cls.__dict__.get("name")
    if not isinstance(name, str):
        raise ValueError(f"{cls.__qualname__} must set its own class attribute 'name'")
    if not _NAME.fullmatch(name):
        raise ValueError(f"method name {name!r} must be lower-case words joined by '-'")
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


def unregister_method(name: str) -> type[Unlearner]:
    """Remove a method from the registry (for tests); returns its class."""
    cls = get_method(name)
    del _REGISTRY[name]
    return cls


def get_method(name: str) -> type[Unlearner]:
    """The class registered under ``name``; an :class:`UnknownMethodError` names the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY) or "none"
        raise UnknownMethodError(f"unknown method {name!r} (known: {known})") from None


def method_names() -> tuple[str, ...]:
    """Every registered method name, in registration order."""
    return tuple(_REGISTRY)


def make_unlearner(name: str, **params) -> Unlearner:
    """An unlearner by its method name with ``params`` passed to its constructor."""
    return get_method(name)(**params)
