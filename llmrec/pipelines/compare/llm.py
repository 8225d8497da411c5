"""The LLM path in the comparison harness: CRAGRU (retrieval store + one LoRA adapter per user
shard, only the touched shards re-tuned) and its zero-shot variant (no adapters), registered as
methods of family ``llm`` beside the embedding unlearners.

Each is judged against its own references: the original is its pre-forget serving (ranked for
the harness's reference users before the request is applied), the gold a second pipeline built
from scratch on the retained data -- also the exactness check (byte-identical adapters and an
identical retrieval store).
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.pipelines.compare.base import Context, MethodOutput
from llmrec.unlearning.method import Method
from llmrec.unlearning.registry import register_method


class LLMMethod(Method, abc.ABC):
    """A method of family ``llm``: it builds and serves its own artifacts for a comparison."""

    family: ClassVar[str] = "llm"
    # attributes are forgotten exactly by construction (profiles drop them); the comparison
    # measures the LLM path on requests that remove interactions, where there is something to see
    handles: ClassVar[tuple[str, ...]] = ("interactions", "user", "item")

    def __init__(self, seed: int = 2020):
        self.seed = seed

    @abc.abstractmethod
    def run(self, ctx: Context) -> MethodOutput:
        """Build on the data before the request, apply it, and return how to score users."""

    def run_stream(self, ctx: dict, requests, views, measure) -> list[dict]:
        """The requests one at a time (see :mod:`llmrec.pipelines.compare.stream`)."""
        raise LlmrecError(f"method {self.name!r} does not run request streams")


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


def build_llm_path(sub, lm, seed: int, adapters: bool = True) -> None:
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


#: users served by both the method and its verified-identical gold before the gold's serving
#: is taken to be the method's own
SPOT_CHECK_USERS = 32


def _same_rankings(pipe, gold_pipe, users: np.ndarray, n: int) -> bool:
    """Whether two pipelines serve the first ``n`` servable ``users`` identically (one batch
    each, fresh caches)."""
    alive = [int(u) for u in users if not pipe.view.forgotten_users[u]][:n]
    if not alive:
        return True
    batch = np.asarray(alive, dtype=np.int64)
    return bool(np.array_equal(_serving(pipe)(batch), _serving(gold_pipe)(batch)))


@register_method
class Cragru(LLMMethod):
    """CRAGRU: retrieval store + one LoRA adapter per user shard over the base LM; a request
    goes through the ledger's forget stages, which re-tune only the touched shards."""

    name: ClassVar[str] = "cragru"
    exact: ClassVar[bool] = True
    #: whether the path tunes adapters (the zero-shot variant serves the base LM alone)
    adapters: ClassVar[bool] = True

    @property
    def kind(self) -> str:
        return "CRAGRU" if self.adapters else "CRAGRU zero-shot (no adapters)"

    def run(self, ctx: Context) -> MethodOutput:
        """Build store + adapters on the data before the request, serve the reference users,
        apply the request through the ledger's stages (timed: the method's unlearning cost),
        and serve likelihood-mode rankings; with the exactness check, also rebuild from scratch
        on the retained data (the gold)."""
        from llmrec.pipelines.cragru import CragruOptions, CragruPipeline
        from llmrec.pipelines.forget import forget
        from llmrec.unlearning.base import PeakMemory
        from retrieval.store import RetrievalStore

        phases: dict[str, float] = {}

        def timed(phase: str, fn):
            t = time.perf_counter()
            out = fn()
            phases[phase] = round(time.perf_counter() - t, 2)
            return out

        lm = timed("base_lm", lambda: _base_lm(ctx))
        opts = CragruOptions(model=str(lm), adapters=self.adapters)
        sub = _sub_workspace(ctx, self.name)
        timed("build", lambda: build_llm_path(sub, lm, self.seed, self.adapters))
        ref_users = np.asarray(ctx.cache.get("reference_users", ()), dtype=np.int64)
        original_fn = timed(
            "serve_original", lambda: _serving(CragruPipeline(sub, opts), ref_users)
        )
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            applied = forget(sub, ctx.requests)
            seconds = time.perf_counter() - t0
        phases["forget"] = round(seconds, 2)
        exact, gold_fn = None, None
        if ctx.cache.get("verify_exact", True):
            gold = _sub_workspace(ctx, f"{self.name}-scratch", ctx.requests)
            timed("build_gold", lambda: build_llm_path(gold, lm, self.seed, self.adapters))
            store, scratch = RetrievalStore.load(sub), RetrievalStore.load(gold)
            diffs = timed("compare_stores", lambda: store.differences(scratch))
            exact = not diffs and (not self.adapters or _adapter_bytes(sub) == _adapter_bytes(gold))
        pipe = CragruPipeline(sub, opts)
        score_fn = _timed_fn(_serving(pipe), phases, "serve_after")
        gold_serving = None
        if exact is not None:
            gold_pipe = CragruPipeline(gold, opts)
            gold_serving = "served in full"
            if exact and _same_rankings(pipe, gold_pipe, ref_users, SPOT_CHECK_USERS):
                gold_fn = score_fn  # deterministic serving of byte-identical artifacts
                gold_serving = (
                    f"the method's own serving: adapters and retrieval store byte-identical, "
                    f"{SPOT_CHECK_USERS} users served by both with identical rankings"
                )
            else:
                gold_fn = _timed_fn(_serving(gold_pipe), phases, "serve_gold")
        if pipe.assignment is not None:
            shards = np.asarray(pipe.assignment, dtype=np.int64)
            fu = np.unique(ctx.task.forget[0])
            touched = np.isin(shards, np.unique(shards[fu]))
        else:  # zero-shot: one shared model, every user is served by what the request changed
            shards, touched = None, np.ones(sub.dataset.n_users, dtype=bool)
        stages = {k: round(v.get("seconds", 0.0), 3) for k, v in applied.get("stages", {}).items()}
        return MethodOutput(
            name=self.name,
            family="llm",
            seconds=seconds,
            peak_memory_mb=mem.increase_mb,
            score_fn=score_fn,
            exact=exact,
            info={
                "stage_seconds": stages,
                "blend": pipe.blend,
                "adapters": self.adapters,
                "workspace": str(sub.root),
                "original_serving_seconds": phases["serve_original"],
                "gold_serving": gold_serving,
                # wall seconds per phase (serving phases accumulate as the harness evaluates)
                "phase_seconds": phases,
            },
            gold_fn=gold_fn,
            original_fn=original_fn,
            references={
                "gold": f"{self.kind} rebuilt from scratch on the retained data"
                if gold_fn is not None
                else "none (exactness check skipped)",
                "original": f"{self.kind} serving before the request",
            },
            user_shards=shards,
            touched_users=touched,
        )

    def run_stream(self, ctx: dict, requests, views, measure) -> list[dict]:
        """Build once before the first request, then each request through the forget stages
        (one shard adapter re-tuned per single-user request) and a fresh serving."""
        from llmrec.pipelines.cragru import CragruOptions, CragruPipeline
        from llmrec.pipelines.forget import forget

        c = Context(
            ctx["ws"], ctx["base"], ctx["seed"], [], views[0], views[0], None, None, ctx["run_dir"]
        )
        lm = _base_lm(c)
        sub = _sub_workspace(c, f"{self.name}-stream")
        t0 = time.perf_counter()
        build_llm_path(sub, lm, self.seed, self.adapters)
        initial = time.perf_counter() - t0
        opts = CragruOptions(model=str(lm), adapters=self.adapters)
        rows = []
        for j, req in enumerate(requests):
            t0 = time.perf_counter()
            forget(sub, [req])
            seconds = time.perf_counter() - t0
            row = {"seconds": seconds, "initial_seconds": initial if j == 0 else 0.0}
            rows.append({**row, **measure(_serving(CragruPipeline(sub, opts)), views[j + 1])})
        return rows


@register_method
class CragruZeroShot(Cragru):
    """CRAGRU zero-shot: the same retrieval store and prompts served by the base LM alone (no
    adapters, nothing to re-tune): the adapters' utility gain and collateral cost beside it."""

    name: ClassVar[str] = "cragru-zeroshot"
    adapters: ClassVar[bool] = False


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
