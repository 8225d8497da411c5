"""What serving a workspace needs, all at once: the missing artifacts and the one command line
that builds them, the base LM to serve (reusing one a comparison built), and what is served
when no adapters are tuned."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmrec.workspace import DEFAULT_WORKSPACE, Workspace


@dataclass
class ServingPlan:
    """``missing``: ``(what, command)`` per absent prerequisite; ``model``: the base LM to
    serve (``None``: the adapters' own base or the one named); ``notes``: what is served
    instead of what was asked for, in words."""

    missing: list[tuple[str, str]] = field(default_factory=list)
    model: str | None = None
    adapters: bool = True
    notes: list[str] = field(default_factory=list)

    def build_command(self, ws: Workspace) -> str:
        """One command line that builds every missing prerequisite."""
        default = Path(ws.root).resolve() == Path(DEFAULT_WORKSPACE).resolve()
        where = "" if default else f" --workspace {ws.root}"
        return " && ".join(f"{cmd}{where}" for _, cmd in self.missing)


def built_base_lm(ws: Workspace) -> Path | None:
    """The workspace's own base LM (``llmrec build-lm``), else the newest one a comparison run
    built inside the workspace (``runs/compare-*/base-lm``): catalogue text only, no user data,
    so any of them serves."""
    from llmrec.serving.cragru import default_lm_dir

    own = default_lm_dir(ws)
    if (own / "config.json").is_file():
        return own
    built = [p.parent for p in (ws.root / "runs").glob("*/base-lm/config.json")]
    return max(built, key=lambda p: p.stat().st_mtime) if built else None


def serving_plan(ws: Workspace, model: str | None, adapters: bool | str) -> ServingPlan:
    """What ``llmrec recommend`` can serve in ``ws`` with the ``model`` and ``adapters`` asked
    for (``True``: the workspace's, ``False``: none, a folder: those)."""
    from llmrec.llm.adapters import adapters_root, load_config
    from llmrec.serving.cragru import default_lm_dir
    from retrieval.store import RetrievalStore

    plan = ServingPlan(adapters=bool(adapters))
    if not RetrievalStore.manifest_path(ws).is_file():
        plan.missing.append(("the retrieval store", "llmrec index build"))
    explicit = isinstance(adapters, str)
    tuned = adapters is True and load_config(ws) is not None
    if adapters is True and not tuned:
        plan.adapters = False
        plan.notes.append(
            f"no adapters tuned in {adapters_root(ws)}: serving the base LM alone "
            "('llmrec adapters tune' tunes them)"
        )
    if model is None and not tuned and not explicit:
        lm = built_base_lm(ws)
        if lm is None:
            plan.missing.append(("a base LM", "llmrec build-lm"))
        elif lm != default_lm_dir(ws):
            plan.model = str(lm)
            plan.notes.append(f"base LM: the one a comparison built, {lm}")
    return plan
