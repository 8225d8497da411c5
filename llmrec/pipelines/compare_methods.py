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
    shards, touched = _shards_of(model, record.info.get("retrained_shards"))
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
            **{k: v for k, v in record.info.items() if k in ("n_retrained", "n_shards")},
        },
        user_shards=shards,
        touched_users=touched,
    )


def _shards_of(model, retrained) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A user-sharded model's shard per user and the users of the shards it retrained."""
    if getattr(model, "unit", None) != "user" or getattr(model, "assignment", None) is None:
        return None, None
    shards = np.asarray(model.assignment, dtype=np.int64)
    return shards, np.isin(shards, list(retrained or []))


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


def _build_llm_path(sub, lm, seed: int, adapters: bool = True) -> None:
    """Retrieval store and (optionally) adapters, tuned with the base model's recipe
    (:mod:`llmrec.llm.recipe`: template, candidate/history shape, LoRA settings), as
    ``llmrec adapters tune`` and ``scripts/run_cragru.py`` do."""
    from llmrec.llm.adapters import AdapterConfig, tune_adapters
    from llmrec.llm.recipe import example_settings, lora_settings, serving
    from retrieval.store import RetrievalStore

    RetrievalStore.build(sub, encoder="text", n_candidates=50, seed=seed)
    if adapters:
        cfg = AdapterConfig(
            base=str(Path(lm).resolve()),
            seed=seed,
            template=serving(lm).template,
            answer_items=serving(lm).answer_items,
            lora=lora_settings(lm),
            examples=example_settings(lm),
        )
        tune_adapters(sub, cfg)


def _adapter_bytes(ws) -> dict[str, bytes]:
    from llmrec.llm.adapters import adapter_paths

    _, paths = adapter_paths(ws)
    return {k: (p / "adapter_model.safetensors").read_bytes() for k, p in paths.items()}


def _serving(pipe, users: np.ndarray | None = None):
    """A score function over a CRAGRU pipeline: its likelihood-mode ranking first, then the
    candidate generator's order (rankings cached per user). ``users`` are ranked at once (for a
    state that is about to change: the pre-forget serving)."""
    n_items = pipe.ws.dataset.n_items
    cache: dict[int, np.ndarray] = {}

    def score_fn(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.int64)
        todo = [int(u) for u in batch if int(u) not in cache and not pipe.view.forgotten_users[u]]
        if todo:
            base = pipe.store.candidate_scores(np.asarray(todo))
            for u, r, b in zip(todo, pipe.recommend(todo, "likelihood"), base):
                cache[u] = _ranked_scores(r.items, b, n_items)
        return np.stack([cache.get(int(u), np.full(n_items, -np.inf, np.float32)) for u in batch])

    if users is not None and len(users):
        score_fn(np.asarray(users, dtype=np.int64))
    return score_fn


def run_cragru(ctx: Context, name: str) -> MethodOutput:
    """CRAGRU: build store + adapters on the data before the request, apply the request through
    the ledger's stages (timed: that is the method's unlearning cost), serve likelihood-mode
    rankings. ``cragru-zeroshot`` is the same path without adapters (the base LM alone).

    Its references are its own: the original is its pre-forget serving (ranked for the
    harness's reference users before the request is applied), the gold a second pipeline
    built from scratch on the retained data (also the exactness check: byte-identical adapters
    and an identical retrieval store). Without the exactness check there is no gold."""
    from llmrec.pipelines.cragru import CragruOptions, CragruPipeline
    from llmrec.pipelines.forget import forget
    from llmrec.unlearning.base import PeakMemory
    from retrieval.store import RetrievalStore

    adapters = name != "cragru-zeroshot"
    phases: dict[str, float] = {}

    def timed(phase: str, fn):
        t = time.perf_counter()
        out = fn()
        phases[phase] = round(time.perf_counter() - t, 2)
        return out

    lm = timed("base_lm", lambda: _base_lm(ctx))
    opts = CragruOptions(model=str(lm), adapters=adapters)
    sub = _sub_workspace(ctx, name)
    timed("build", lambda: _build_llm_path(sub, lm, ctx.seed, adapters))
    ref_users = np.asarray(ctx.cache.get("reference_users", ()), dtype=np.int64)
    original_fn = timed("serve_original", lambda: _serving(CragruPipeline(sub, opts), ref_users))
    original_seconds = phases["serve_original"]
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        applied = forget(sub, ctx.requests)
        seconds = time.perf_counter() - t0
    exact, gold_fn = None, None
    if ctx.cache.get("verify_exact", True):
        gold = _sub_workspace(ctx, f"{name}-scratch", ctx.requests)
        timed("build_gold", lambda: _build_llm_path(gold, lm, ctx.seed, adapters))
        store, scratch = RetrievalStore.load(sub), RetrievalStore.load(gold)
        users = np.arange(0, sub.dataset.n_users, 7)
        diffs = store.differences(scratch, users=users)
        exact = not diffs and (not adapters or _adapter_bytes(sub) == _adapter_bytes(gold))
        gold_fn = _timed_fn(_serving(CragruPipeline(gold, opts)), phases, "serve_gold")
    pipe = CragruPipeline(sub, opts)
    shards = touched = None
    if pipe.assignment is not None:
        shards = np.asarray(pipe.assignment, dtype=np.int64)
        fu = np.unique(ctx.task.forget[0])
        touched = np.isin(shards, np.unique(shards[fu]))
    else:  # zero-shot: one shared model, every user is served by what the request changed
        touched = np.ones(sub.dataset.n_users, dtype=bool)
    stages = {k: round(v.get("seconds", 0.0), 3) for k, v in applied.get("stages", {}).items()}
    kind = "CRAGRU" if adapters else "CRAGRU zero-shot (no adapters)"
    return MethodOutput(
        name=name,
        family="llm",
        seconds=seconds,
        peak_memory_mb=mem.increase_mb,
        score_fn=_timed_fn(_serving(pipe), phases, "serve_after"),
        exact=exact,
        info={
            "stage_seconds": stages,
            "blend": pipe.blend,
            "adapters": adapters,
            "workspace": str(sub.root),
            "original_serving_seconds": original_seconds,
            # wall seconds per phase (serving phases accumulate as the harness evaluates)
            "phase_seconds": phases,
        },
        gold_fn=gold_fn,
        original_fn=original_fn,
        references={
            "gold": f"{kind} rebuilt from scratch on the retained data"
            if gold_fn is not None
            else "none (exactness check skipped)",
            "original": f"{kind} serving before the request",
        },
        user_shards=shards,
        touched_users=touched,
    )


def _timed_fn(fn, phases: dict[str, float], key: str):
    """``fn`` that adds its wall seconds to ``phases[key]`` on every call."""

    def wrapped(batch):
        t = time.perf_counter()
        try:
            return fn(batch)
        finally:
            phases[key] = round(phases.get(key, 0.0) + time.perf_counter() - t, 2)

    return wrapped


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
