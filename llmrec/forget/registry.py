"""The forget stages, registered: the one list the forget runner and ``llmrec audit`` iterate.

A stage (:class:`~llmrec.forget.stage.Stage`, docs/design.md §2.2) is one module that owns an
artifact family: ``discover(ws)``, ``apply(ctx)`` and ``audit(ctx)``. It joins the forget path
by registering itself::

    @register_stage
    class MyStage:
        name = "my-artifacts"
        order = 500          # lower runs first; the served log runs last
        def discover(self, ws): ...
        def apply(self, ctx): ...
        def audit(self, ctx): ...

The built-in stages are the modules of :mod:`llmrec.forget.stages` (imported, so registered,
by the :mod:`llmrec.forget` package). A plug-in registers in
process (import its module before running the runner) or through the ``llmrec.stages`` entry
point group of its package (the entry point names a stage class, a stage object, or a module
that registers on import): :func:`active` loads them once. Stages never open the ledger or
rebuild a view themselves; heavy modules (FAISS, torch, transformers) are imported inside
their methods, so importing the registry stays cheap.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from llmrec.errors import LlmrecError
from llmrec.forget.stage import Stage

#: the entry point group a plug-in package lists its stages under
ENTRY_POINT_GROUP = "llmrec.stages"
#: the ``order`` of the served log: after every stage whose artifacts serve lists
LAST = 1000
#: the ``order`` of a stage that does not set one (before the served log)
DEFAULT_ORDER = 500

#: every registered stage, in the order they run
ALL_STAGES: tuple[Stage, ...] = ()
#: the stages the forget runner and the audit iterate (tests may narrow it)
STAGES: tuple[Stage, ...] = ()
_plugins_loaded = False


def register_stage(stage: Any) -> Any:
    """Register a stage class (instantiated without arguments) or stage object; returns it, so
    it serves as a class decorator. Registering a name again replaces that stage."""
    global ALL_STAGES, STAGES
    obj = stage() if isinstance(stage, type) else stage
    for attr in ("name", "discover", "apply", "audit"):
        if not hasattr(obj, attr):
            raise TypeError(f"forget stage {obj!r} has no {attr!r} (see llmrec.forget.stage)")
    if getattr(obj, "order", None) is None:
        obj.order = DEFAULT_ORDER
    kept = tuple(s for s in ALL_STAGES if s.name != obj.name)
    ALL_STAGES = tuple(sorted((*kept, obj), key=lambda s: (s.order, s.name)))
    STAGES = ALL_STAGES
    return stage


def unregister_stage(name: str) -> None:
    """Remove the stage ``name`` (a plug-in's tests clean up with it)."""
    global ALL_STAGES, STAGES
    ALL_STAGES = tuple(s for s in ALL_STAGES if s.name != name)
    STAGES = tuple(s for s in STAGES if s.name != name)


def load_plugins() -> None:
    """Register the stages of the ``llmrec.stages`` entry point group (once per process);
    :class:`LlmrecError` naming a plug-in that cannot be loaded."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is one line, not a crash
            raise LlmrecError(f"forget stage plug-in {ep.name!r} ({ep.value}): {exc}") from None
        if hasattr(obj, "apply") and hasattr(obj, "audit"):
            if all(s is not obj and type(s) is not obj for s in ALL_STAGES):
                register_stage(obj)


def active() -> tuple[Stage, ...]:
    """The stages to run (plug-ins loaded): :data:`STAGES`, in order."""
    load_plugins()
    return STAGES


def registered() -> tuple[Stage, ...]:
    """Every registered stage (plug-ins loaded), in order, whatever :data:`STAGES` is narrowed
    to: what discovery looks for."""
    load_plugins()
    return ALL_STAGES


def select(*names: str) -> tuple[Stage, ...]:
    """The registered stages named ``names`` (in run order); ``KeyError`` for a name that is
    not a stage."""
    load_plugins()
    known = {s.name for s in ALL_STAGES}
    missing = set(names) - known
    if missing:
        raise KeyError(f"no forget stage {', '.join(sorted(missing))}; stages: {sorted(known)}")
    return tuple(s for s in ALL_STAGES if s.name in names)
