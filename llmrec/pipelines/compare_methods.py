"""Method runners of the comparison harness: embedding unlearners and the LLM path."""

from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.pipelines.compare import Context, MethodOutput


def unlearner_classes() -> dict[str, type]:
    """Every :class:`~llmrec.unlearning.base.Unlearner` subclass of ``llmrec.unlearning`` by name."""
    import llmrec.unlearning as pkg
    from llmrec.unlearning.base import Unlearner

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    out: dict[str, type] = {}
    todo = list(Unlearner.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not getattr(cls, "__abstractmethods__", None) and cls.name != Unlearner.name:
            out[cls.name] = cls
    return out


def run_embedding(ctx: Context, name: str) -> MethodOutput:
    """Run the unlearner ``name`` with its default settings on the context's request."""
    classes = unlearner_classes()
    if name not in classes:
        raise LlmrecError(
            f"unknown unlearning method {name!r} (known: {', '.join(sorted(classes))})"
        )
    unlearner = (
        classes[name](seed=ctx.seed) if "seed" in _params(classes[name]) else classes[name]()
    )
    data = (ctx.ws.dataset, ctx.ws.split, ctx.before)
    t0 = time.perf_counter()
    model, record = unlearner.unlearn(ctx.original, data, ctx.requests)
    wall = time.perf_counter() - t0
    emb = model.user_embeddings().detach().cpu().numpy()
    return MethodOutput(
        name=name,
        family="embedding",
        seconds=record.seconds,
        peak_memory_mb=record.peak_memory_mb,
        score_fn=model.score,
        user_embeddings=emb,
        model=model,
        info={
            "iterations": record.iterations,
            "converged": record.converged,
            "wall_seconds": wall,
            "settings": _plain(record.settings),
        },
    )


def _params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def _plain(d: dict) -> dict:
    """Settings without nested model configs (kept short for reports)."""
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool, type(None)))}


# ---------------------------------------------------------------------------- LLM path


def _sub_workspace(ctx: Context, name: str, extra_requests=()):
    """A workspace under the run folder replaying the main ledger (+ ``extra_requests``), so the
    comparison never records anything in the user's own ledger."""
    from llmrec.workspace import Workspace

    main = ctx.ws
    sub = Workspace(
        ctx.run_dir / f"{name}-seed{ctx.seed}",
        dataset=main.config["dataset"],
        data_dir=main.config["data_dir"],
        split=main.config["split"],
    )
    before = []
    if main.ledger_path.exists():
        with main.ledger() as led:
            before = [e.request for e in led.entries(upto=ctx.before.version)]
    reqs = [*before, *extra_requests]
    if reqs:
        with sub.ledger() as led:
            led.record_many(reqs)
    return sub


def _base_lm(ctx: Context):
    """The base LM holds catalogue text only, so one build serves every seed and workspace:
    the main workspace's when it has one, else one built once per comparison run."""
    from llmrec.llm.lm_builder import build_lm
    from llmrec.pipelines.cragru import default_lm_dir

    own = default_lm_dir(ctx.ws)
    if (own / "config.json").is_file():
        return own
    shared = ctx.run_dir / "base-lm"
    if not (shared / "config.json").is_file():
        build_lm(ctx.ws.dataset, shared, seed=2020)
    return shared


def _build_llm_path(sub, lm, seed: int) -> None:
    from llmrec.llm.adapters import AdapterConfig, tune_adapters
    from llmrec.llm.lora import LoraSettings
    from retrieval.store import RetrievalStore

    RetrievalStore.build(sub, encoder="text", n_candidates=50, seed=seed)
    tune_adapters(sub, AdapterConfig(base=str(Path(lm).resolve()), seed=seed, lora=LoraSettings()))


def _adapter_bytes(ws) -> dict[str, bytes]:
    from llmrec.llm.adapters import adapter_paths

    _, paths = adapter_paths(ws)
    return {k: (p / "adapter_model.safetensors").read_bytes() for k, p in paths.items()}


def run_cragru(ctx: Context, name: str) -> MethodOutput:
    """CRAGRU: build store + adapters on the data before the request, apply the request through
    the ledger's stages (timed: that is the method's unlearning cost), serve likelihood-mode
    rankings. Exactness: a second pipeline built from scratch on the retained data must have
    byte-identical adapters and an identical retrieval store."""
    from llmrec.pipelines.cragru import CragruOptions, CragruPipeline
    from llmrec.pipelines.forget import forget
    from llmrec.unlearning.base import PeakMemory
    from retrieval.store import RetrievalStore

    lm = _base_lm(ctx)
    sub = _sub_workspace(ctx, "cragru")
    _build_llm_path(sub, lm, ctx.seed)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        applied = forget(sub, ctx.requests)
        seconds = time.perf_counter() - t0
    exact = None
    if ctx.cache.get("verify_exact", True):
        gold = _sub_workspace(ctx, "cragru-scratch", ctx.requests)
        _build_llm_path(gold, lm, ctx.seed)
        store, scratch = RetrievalStore.load(sub), RetrievalStore.load(gold)
        users = np.arange(0, sub.dataset.n_users, 7)
        diffs = store.differences(scratch, users=users)
        exact = not diffs and _adapter_bytes(sub) == _adapter_bytes(gold)
    pipe = CragruPipeline(sub, CragruOptions(model=str(lm)))
    n_items = sub.dataset.n_items
    cache: dict[int, np.ndarray] = {}

    def score_fn(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.int64)
        todo = [int(u) for u in batch if int(u) not in cache and not pipe.view.forgotten_users[u]]
        if todo:
            base = pipe.store.candidate_scores(np.asarray(todo))
            for u, r, b in zip(todo, pipe.recommend(todo, "likelihood"), base):
                cache[u] = _ranked_scores(r.items, b, n_items)
        return np.stack([cache.get(int(u), np.full(n_items, -np.inf, np.float32)) for u in batch])

    stages = {k: round(v.get("seconds", 0.0), 3) for k, v in applied.get("stages", {}).items()}
    return MethodOutput(
        name=name,
        family="llm",
        seconds=seconds,
        peak_memory_mb=mem.increase_mb,
        score_fn=score_fn,
        exact=exact,
        info={"stage_seconds": stages, "blend": pipe.blend, "workspace": str(sub.root)},
    )


def _ranked_scores(items: np.ndarray, base: np.ndarray, n_items: int) -> np.ndarray:
    """The LLM's ranking first (in order), then every other item in the candidate generator's
    order (non-rankable items stay ``-inf``)."""
    s = np.full(n_items, -np.inf, dtype=np.float32)
    finite = np.isfinite(base)
    if finite.any():
        lo, hi = base[finite].min(), base[finite].max()
        s[finite] = (base[finite] - lo) / ((hi - lo) or 1.0) - 2.0
    s[items] = 1e6 - np.arange(len(items), dtype=np.float32)
    return s
