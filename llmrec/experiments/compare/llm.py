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
from llmrec.evaluation.ranking import ranking_first_scores
from llmrec.experiments.compare.base import Context, MethodOutput, valid_ndcg
from llmrec.progress import phase
from llmrec.unlearning.method import Method
from llmrec.unlearning.registry import register_method

#: the run folder's sub-folder of scratch workspaces (each holds user data)
SCRATCH = "workspaces"


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
        """The requests one at a time (see :mod:`llmrec.experiments.compare.stream`)."""
        raise LlmrecError(f"method {self.name!r} does not run request streams")


def scratch_dir(run_dir: Path) -> Path:
    """Where a comparison keeps its scratch workspaces and their shared caches: deleted at the
    end of the run unless ``--keep-workspaces`` (:func:`llmrec.experiments.compare.run_compare`)."""
    return Path(run_dir) / SCRATCH


def _sub_workspace(ctx: Context, name: str, extra_requests=()):
    """A scratch workspace replaying the main ledger (+ ``extra_requests``), so the comparison
    never records anything in the user's own ledger."""
    from llmrec.workspace import Workspace

    main = ctx.ws
    sub = Workspace(
        scratch_dir(ctx.run_dir) / f"{name}-seed{ctx.seed}",
        dataset=main.config["dataset"],
        data_dir=main.data_dir,
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


def _base_lm(ctx: Context) -> Path:
    """The LLM path's base model (``ctx.cache["llm_base"]``, see :func:`resolve_llm_base`).
    A base holds catalogue text only, so one build serves every seed and workspace."""
    return resolve_llm_base(ctx.ws, ctx.run_dir, ctx.cache.get("llm_base"))


def resolve_llm_base(ws, run_dir: Path, name: str | None = None) -> Path:
    """``None``: the toolkit-built default (the workspace's ``llmrec build-lm`` when it has one,
    else one built once per comparison run); ``smollm2``: the workspace's conversion when it has
    one, else one converted once per run (:mod:`llmrec.llm.smollm2`); else a model folder."""
    from llmrec.llm.lm_builder import build_lm
    from llmrec.llm.smollm2 import convert_smollm2
    from llmrec.serving.cragru import NAMED_BASES, default_lm_dir, named_base

    if name is None:
        own = default_lm_dir(ws)
        if (own / "config.json").is_file():
            return own
        shared = scratch_dir(run_dir) / "base-lm"
        if not (shared / "config.json").is_file():
            build_lm(ws.dataset, shared, seed=2020)
        return shared
    if name in NAMED_BASES:  # converted, never adapted: the same base for every workspace
        try:
            return named_base(ws, name)
        except LlmrecError:
            shared = scratch_dir(run_dir) / f"base-lm-{name}"
            convert_smollm2(shared)  # reused when already converted in this run
            return shared
    return check_llm_base(name)


def check_llm_base(name: str) -> Path | None:
    """A named base (``None`` back) or a model folder; :class:`LlmrecError` for anything else
    (checked before a comparison trains anything)."""
    from llmrec.serving.cragru import NAMED_BASES

    if name in NAMED_BASES:
        return None
    folder = Path(name)
    if not (folder / "config.json").is_file():
        raise LlmrecError(
            f"--llm-base {name}: not a model folder (no config.json) nor one of "
            f"{', '.join(NAMED_BASES)}"
        )
    return folder


def _text_cache(ctx: Context) -> Path:
    """One text-embedding cache for every workspace of a comparison run (item text only: the
    encoder never reads user data, so the catalogue is encoded once, not once per store)."""
    return scratch_dir(ctx.run_dir) / "text-embeddings"


def build_llm_path(
    sub, lm, seed: int, adapters: bool = True, cache_dir=None, source: str = "ease"
) -> None:
    """Retrieval store and (optionally) adapters, tuned with the base model's recipe
    (:mod:`llmrec.llm.recipe`: template, candidate/history shape, LoRA settings), as
    ``llmrec adapters tune`` does, but with :data:`~llmrec.llm.recipe.COMPARE_RECIPE`: the
    comparison tunes every shard three times (original, after the request, gold) inside its time
    budget. ``cache_dir``: the store's text-embedding cache (item text only), shared by the
    comparison's workspaces; ``source``: the store's candidate list (:mod:`retrieval.hybrid`)."""
    from llmrec.llm.adapters import AdapterConfig, tune_adapters
    from llmrec.llm.recipe import COMPARE_RECIPE, example_settings, lora_settings, serving
    from retrieval.store import RetrievalStore

    RetrievalStore.build(
        sub, encoder="text", n_candidates=50, seed=seed, cache_dir=cache_dir, source=source
    )
    if adapters:
        cfg = AdapterConfig(
            base=str(Path(lm).resolve()),
            seed=seed,
            template=serving(lm).template,
            answer_items=serving(lm).answer_items,
            lora=lora_settings(lm, recipe=COMPARE_RECIPE),
            examples=example_settings(lm, COMPARE_RECIPE),
        )
        tune_adapters(sub, cfg)


def _options(lm: Path, adapters: bool):
    """Serving options of the comparison's pipelines: the backend's answer memo on
    (:mod:`llmrec.llm.backends.memo`): the original, after-forget and gold states serve many
    users an unchanged prompt, candidate list and adapter, and a repeat is a lookup -- keyed on
    all of it, never stale; the harness empties it at the end of the run."""
    from llmrec.serving.cragru import CragruOptions

    return CragruOptions(model=str(lm), adapters=adapters, backend_options={"memo": True})


def _adapter_bytes(ws) -> dict[str, bytes]:
    from llmrec.llm.adapters import adapter_paths

    _, paths = adapter_paths(ws)
    return {k: (p / "adapter_model.safetensors").read_bytes() for k, p in paths.items()}


class _Serving:
    """A CRAGRU pipeline scored as it is served: the likelihood-mode LM scores blended with the
    candidate order by a prior weight tuned on the VALID part of ``tune_users`` at the
    pipeline's own ledger state (as ``scripts/run_cragru.py`` tunes the served default; with
    no such users the pipeline's own weight), ranked first, then the co-occurrence candidate model's
    order. Rankings are computed once per user (the LM pass never depends on the weight)."""

    def __init__(self, pipe, tune_users: np.ndarray | None = None):
        self.pipe = pipe
        self.n_items = pipe.ws.dataset.n_items
        self.raw: dict[int, tuple[object, np.ndarray, np.ndarray]] = {}
        self.weight: float | None = None
        self.curve: dict[float, float] = {}
        self._tune_users = np.asarray([] if tune_users is None else tune_users, dtype=np.int64)

    def _rank(self, users) -> None:
        view = self.pipe.view
        todo = [int(u) for u in users if int(u) not in self.raw and not view.forgotten_users[u]]
        if not todo:
            return
        ctxs = [self.pipe.context(u) for u in todo]
        base = self.pipe.store.candidate_scores(np.asarray(todo))
        ranked = self.pipe.recommend(todo, "likelihood", contexts=ctxs, blend=0.0)
        for u, c, r, b in zip(todo, ctxs, ranked, base):
            self.raw[u] = (r, c.candidates[~view.forgotten_items[c.candidates]], b)

    def _scores(self, users, weight: float) -> np.ndarray:
        from llmrec.serving.cragru import blend_ranking

        rows = []
        for u in users:
            got = self.raw.get(int(u))
            if got is None:  # forgotten: nothing is served
                rows.append(np.full(self.n_items, -np.inf, np.float32))
                continue
            r, cands, b = got
            items = blend_ranking(r, cands, weight).items
            rows.append(
                ranking_first_scores(items, b, self.n_items, floor=-np.inf, dtype=np.float32)
            )
        return np.stack(rows) if rows else np.zeros((0, self.n_items), np.float32)

    def tune(self) -> float:
        """Choose the served weight on VALID (once)."""
        from llmrec.serving.cragru import choose_blend

        if self.weight is not None:
            return self.weight
        view = self.pipe.view
        users = self._tune_users[~view.forgotten_users[self._tune_users]]
        if not len(users):
            self.weight = float(self.pipe.blend)
            return self.weight
        self._rank(users)
        excl = view.forgotten_items if view.forgotten_items.any() else None

        def valid(w: float) -> float:
            fn = lambda batch: self._scores(batch, w)  # noqa: E731
            return valid_ndcg(fn, self.pipe.ws, view.keep, users, excl, 10)[0]

        self.weight, self.curve = choose_blend(valid)
        return self.weight

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        weight = self.tune()
        batch = np.asarray(batch, dtype=np.int64)
        self._rank(batch)
        return self._scores(batch, weight)

    def info(self) -> dict:
        return {"weight": self.weight, "valid_ndcg@10": {str(w): v for w, v in self.curve.items()}}


def _serving(pipe, users: np.ndarray | None = None) -> _Serving:
    """The served scores of a CRAGRU pipeline, the blend tuned on ``users``' VALID part; they
    are ranked (and the weight chosen) at once: for a state that is about to change."""
    fn = _Serving(pipe, users)
    if users is not None and len(users):
        fn.tune()
    return fn


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
        from llmrec.forget.runner import forget
        from llmrec.serving.cragru import CragruPipeline
        from llmrec.unlearning.base import PeakMemory
        from retrieval.store import RetrievalStore

        phases: dict[str, float] = {}

        def timed(step: str, fn):
            t = time.perf_counter()
            with phase(f"{self.name}: {step.replace('_', ' ')}"):
                out = fn()
            phases[step] = round(time.perf_counter() - t, 2)
            return out

        lm = timed("base_lm", lambda: _base_lm(ctx))
        opts = _options(lm, self.adapters)
        sub = _sub_workspace(ctx, self.name)
        source = ctx.cache.get("candidate_source", "ease")
        timed(
            "build",
            lambda: build_llm_path(sub, lm, self.seed, self.adapters, _text_cache(ctx), source),
        )
        ref_users = np.asarray(ctx.cache.get("reference_users", ()), dtype=np.int64)
        original_fn = timed(
            "serve_original", lambda: _serving(CragruPipeline(sub, opts), ref_users)
        )
        with PeakMemory() as mem, phase(f"{self.name}: forget"):
            t0 = time.perf_counter()
            applied = forget(sub, ctx.requests)
            seconds = time.perf_counter() - t0
        phases["forget"] = round(seconds, 2)
        exact, gold_fn = None, None
        if ctx.cache.get("verify_exact", True):
            gold = _sub_workspace(ctx, f"{self.name}-scratch", ctx.requests)
            timed(
                "build_gold",
                lambda: build_llm_path(
                    gold, lm, self.seed, self.adapters, _text_cache(ctx), source
                ),
            )
            store, scratch = RetrievalStore.load(sub), RetrievalStore.load(gold)
            diffs = timed("compare_stores", lambda: store.differences(scratch))
            exact = not diffs and (not self.adapters or _adapter_bytes(sub) == _adapter_bytes(gold))
        pipe = CragruPipeline(sub, opts)
        after = _Serving(pipe, ref_users)
        timed("serve_after", after.tune)
        score_fn = _timed_fn(after, phases, "serve_after")
        gold_weight = None
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
                gold_weight = after.weight
            else:
                gold_serve = _Serving(gold_pipe, ref_users)
                gold_weight = timed("serve_gold", gold_serve.tune)
                gold_fn = _timed_fn(gold_serve, phases, "serve_gold")
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
                # prior weights of the served blend, each tuned on the reference users' VALID
                # part at its own state (original, after the request, gold)
                "blend": {
                    "original": original_fn.weight,
                    "after": after.weight,
                    "gold": gold_weight,
                    "after_valid_ndcg@10": after.info()["valid_ndcg@10"],
                },
                "adapters": self.adapters,
                "base_lm": ctx.ws.stored_path(lm),  # a workspace-relative path when inside it
                # relative to the run folder; deleted with the scratch unless kept
                "workspace": str(sub.root.relative_to(ctx.run_dir)),
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
        from llmrec.forget.runner import forget
        from llmrec.serving.cragru import CragruPipeline

        c = _stream_context(ctx, views)
        lm = _base_lm(c)
        sub = _sub_workspace(c, f"{self.name}-stream")
        t0 = time.perf_counter()
        build_llm_path(sub, lm, self.seed, self.adapters, _text_cache(c))
        initial = time.perf_counter() - t0
        opts = _options(lm, self.adapters)
        rows = []
        for j, req in enumerate(requests):
            t0 = time.perf_counter()
            forget(sub, [req])
            seconds = time.perf_counter() - t0
            row = {"seconds": seconds, "initial_seconds": initial if j == 0 else 0.0}
            # the served blend tuned on the measured users' VALID part (TEST is measured)
            served = _Serving(CragruPipeline(sub, opts), ctx.get("eval_users"))
            rows.append({**row, **measure(served, views[j + 1]), "blend": served.tune()})
        return rows


@register_method
class CragruZeroShot(Cragru):
    """CRAGRU zero-shot: the same retrieval store and prompts served by the base LM alone (no
    adapters, nothing to re-tune): the adapters' utility gain and collateral cost beside it."""

    name: ClassVar[str] = "cragru-zeroshot"
    adapters: ClassVar[bool] = False


class _CandidateOrder:
    """A retrieval store's candidate lists of ``n`` items ranked first, then the generator's
    order: the ranking the LLM path re-ranks, as a score function (rows cached per user)."""

    def __init__(self, store, n: int) -> None:
        self.store, self.n = store, int(n)
        self.rows: dict[int, np.ndarray] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.int64)
        todo = np.array([u for u in batch.tolist() if u not in self.rows], dtype=np.int64)
        if len(todo):
            cands = self.store.candidates(todo, self.n)
            base = self.store.candidate_scores(todo)
            forgotten = self.store.view.forgotten_users
            for u, c, b in zip(todo.tolist(), cands, base):
                self.rows[u] = (
                    np.full(len(b), -np.inf, np.float32)
                    if forgotten[u]
                    else ranking_first_scores(c[c >= 0], b, len(b), floor=-np.inf, dtype=np.float32)
                )
        n_items = self.store.n_items
        return (
            np.stack([self.rows[u] for u in batch.tolist()])
            if len(batch)
            else np.zeros((0, n_items), np.float32)
        )


@register_method
class CandidateOrder(LLMMethod):
    """The control of the LLM path: its candidate generator's own order (the retrieval store's
    candidate list of the length the LLM re-ranks, then the generator's order), with no LM. Its
    forget cost is the retrieval store's update; what the LLM adds is measured against it."""

    name: ClassVar[str] = "candidates"
    exact: ClassVar[bool] = True

    def run(self, ctx: Context) -> MethodOutput:
        """Build the store on the data before the request, rank the reference users, apply the
        request through the forget stages (timed) and rank; with the exactness check, also
        rebuild the store from scratch on the retained data (the gold)."""
        from llmrec.forget.runner import forget
        from llmrec.llm.recipe import serving
        from llmrec.unlearning.base import PeakMemory
        from retrieval.store import RetrievalStore

        source = ctx.cache.get("candidate_source", "ease")
        # the list length the LLM path re-ranks (its base model's recipe); under ``ease`` any
        # length gives the same ranking, so no base model is needed for it
        n = serving(_base_lm(ctx)).n_candidates if source != "ease" else 50
        phases: dict[str, float] = {}
        sub = _sub_workspace(ctx, self.name)
        t = time.perf_counter()
        # the LLM path's own store (the same recipe), without adapters
        build_llm_path(sub, None, self.seed, False, _text_cache(ctx), source)
        phases["build"] = round(time.perf_counter() - t, 2)
        ref_users = np.asarray(ctx.cache.get("reference_users", ()), dtype=np.int64)
        original_fn = _CandidateOrder(RetrievalStore.load(sub), n)
        original_fn(ref_users)  # ranked now: the state is about to change
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            applied = forget(sub, ctx.requests)
            seconds = time.perf_counter() - t0
        store = RetrievalStore.load(sub)
        score_fn = _CandidateOrder(store, n)
        exact, gold_fn = None, None
        if ctx.cache.get("verify_exact", True):
            gold = _sub_workspace(ctx, f"{self.name}-scratch", ctx.requests)
            build_llm_path(gold, None, self.seed, False, _text_cache(ctx), source)
            scratch = RetrievalStore.load(gold)
            exact = not store.differences(scratch)
            gold_fn = score_fn if exact else _CandidateOrder(scratch, n)
        stages = {k: round(v.get("seconds", 0.0), 3) for k, v in applied.get("stages", {}).items()}
        return MethodOutput(
            name=self.name,
            family="llm",
            seconds=seconds,
            peak_memory_mb=mem.increase_mb,
            score_fn=score_fn,
            exact=exact,
            info={
                "candidate_source": source,
                "n_candidates": n,
                "stage_seconds": stages,
                "workspace": str(sub.root),
                "phase_seconds": phases,
            },
            gold_fn=gold_fn,
            original_fn=original_fn,
            references={
                "gold": f"the {source} candidate order of a store rebuilt from scratch on the "
                "retained data"
                if gold_fn is not None
                else "none (exactness check skipped)",
                "original": f"the {source} candidate order before the request",
            },
        )

    def run_stream(self, ctx: dict, requests, views, measure) -> list[dict]:
        """Build the store once before the first request, then each request through the forget
        stages and the candidate order of the updated store."""
        from llmrec.forget.runner import forget
        from retrieval.store import RetrievalStore

        c = _stream_context(ctx, views)
        sub = _sub_workspace(c, f"{self.name}-stream")
        t0 = time.perf_counter()
        build_llm_path(sub, None, self.seed, False, _text_cache(c))
        initial = time.perf_counter() - t0
        rows = []
        for j, req in enumerate(requests):
            t0 = time.perf_counter()
            forget(sub, [req])
            row = {
                "seconds": time.perf_counter() - t0,
                "initial_seconds": initial if j == 0 else 0.0,
            }
            rows.append(
                {**row, **measure(_CandidateOrder(RetrievalStore.load(sub), 50), views[j + 1])}
            )
        return rows


def _stream_context(ctx: dict, views) -> Context:
    """A :class:`Context` for a request stream (no request yet: before = after = the first
    view), carrying the LLM path's base model choice."""
    return Context(
        ctx["ws"],
        ctx["base"],
        ctx["seed"],
        [],
        views[0],
        views[0],
        None,
        None,
        ctx["run_dir"],
        {"llm_base": ctx.get("llm_base")},
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
