"""The CRAGRU pipeline: forget-aware retrieval + LLM regeneration, and its forget scenario.

Serving (:class:`CragruPipeline`): for a user, the retrieval store gives the retained history
selected by a CRAGRU strategy, the visible profile and the candidate list (exactly unlearnable
co-occurrence generator); the prompt is rendered with a template; the user's shard adapter on
the base LM regenerates the ranking in one of three modes (:mod:`llmrec.llm.generator`).

Blending (likelihood mode): the adapters are tuned as a residual on top of the candidate
generator's order (``logit + beta * prior``, prior ``-log2(2 + rank)``), so the served score is
``log p_LM(item) + blend * prior``; ``blend = 0`` is the pure LM ranking. The scenario tunes
``blend`` on the VALID part of the evaluated users (grid search) and stores it
(``adapters/blend.json``) as the served default; without it ``blend = beta``.

Scenario (:func:`run_scenario`): select a forget set, apply it through every stage of the
ledger (retrieval, adapters, ...), regenerate recommendations for every served user with a test
item (``eval_users="all"``; ``"affected"``: the forget users and their neighbours only -- they
are reported as their own groups either way), and compare on the same users, RecBole protocol
restricted to the candidate list (items outside the candidates rank after them, in the
generator's order): the LLM ranking, the candidate generator's own order and BPR-MF retrained on
the retained data. The quality block gives the three NDCG@10 and the paired per-user differences
(LLM - candidates, LLM - 0.85 x BPR) with their standard error, a paired t-test and a Wilcoxon
signed-rank test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.data.split import TRAIN
from llmrec.errors import ArtifactError, DataError
from llmrec.io import atomic_write_json, atomic_write_text
from llmrec.llm.catalog import Catalog
from llmrec.llm.generator import MODES, RANK_MODES, Generator, Ranking
from llmrec.llm.loading import LoadOptions, resolve_base, weights_hash
from llmrec.llm.lora import rank_prior
from llmrec.llm.prompt import UserContext
from llmrec.llm.recipe import serving
from llmrec.pipelines.served import suppress_filter
from llmrec.workspace import Workspace

LM_DIR = ("artifacts", "lm")


def default_lm_dir(ws: Workspace) -> Path:
    """Where ``llmrec build-lm`` puts the workspace's base model."""
    return ws.root.joinpath(*LM_DIR)


@dataclass
class CragruOptions:
    """Serving options.

    ``model``: hub id or folder (default: the base the workspace's adapters were tuned on, else
    the workspace's built LM). ``adapters``: ``True`` the workspace's adapters, ``False`` (or
    ``"none"``) the base model alone, a folder: the adapters tuned there (named explicitly, they
    may be served with another template or base). ``template`` and ``n_candidates`` default to
    the adapters' own (the list length they were tuned on), else to the base model's recipe
    (:func:`llmrec.llm.recipe.serving`), which also sets the default history budget. ``load``: dtype, device map, attention implementation, remote code of the base.
    """

    model: str | None = None
    adapters: bool | str = True
    template: str | None = None
    strategy: str = "preference"
    history: int | None = None
    n_candidates: int | None = None
    top_k: int = 10
    batch_size: int = 32
    device: str = "cpu"
    blend: float | None = None
    scope: str = "candidates"
    load: LoadOptions | None = None


BLEND_FILE = "blend.json"


def save_blend(ws: Workspace, weight: float, version: int, valid: float, cand_valid: float) -> None:
    """Record the prior weight tuned on VALID (served by default afterwards)."""
    from llmrec.llm.adapters import adapters_root

    atomic_write_json(
        adapters_root(ws) / BLEND_FILE,
        {
            "blend": weight,
            "tuned_on": "valid ndcg@10",
            "ledger_version": version,
            "valid_ndcg@10": valid,
            "candidates_valid_ndcg@10": cand_valid,
        },
    )


def load_blend(ws: Workspace) -> float | None:
    from llmrec.llm.adapters import adapters_root

    p = adapters_root(ws) / BLEND_FILE
    return float(json.loads(p.read_text())["blend"]) if p.is_file() else None


def blend_ranking(r: Ranking, candidates: np.ndarray, weight: float) -> Ranking:
    """Re-sort a likelihood ranking by ``score + weight * prior(rank in candidates)``."""
    if weight == 0 or r.mode != "likelihood" or not len(r.items):
        return r
    rank = {int(c): k for k, c in enumerate(candidates)}
    prior = rank_prior(len(candidates))
    pos = np.array([rank[int(i)] for i in r.items])
    score = r.scores + weight * prior[pos]
    order = np.lexsort((pos, -score))
    return Ranking(
        r.user,
        r.items[order],
        score[order],
        r.mode,
        r.fallback,
        r.report,
        r.text,
        {**r.extra, "blend": weight},
    )


class CragruPipeline:
    """Serve regenerated rankings from a workspace's store, base model and adapters, under the
    prompt contract the adapters were tuned with (template, chat template, BOS, budget)."""

    def __init__(self, ws: Workspace, options: CragruOptions | None = None, store: Any = None):
        from llmrec.llm.adapters import adapters_root, load_config
        from llmrec.llm.shards import shard_of
        from retrieval.store import RetrievalStore

        self.ws = ws
        self.opt = options or CragruOptions()
        self.store = store or RetrievalStore.load(ws)
        ds = ws.dataset
        self.catalog = Catalog.from_dataset(ds)
        want = self.opt.adapters
        explicit = isinstance(want, str) and want != "none"
        root = Path(want) if explicit else adapters_root(ws)
        cfg = load_config(ws, root) if want and want != "none" else None
        if explicit and cfg is None:
            raise ArtifactError(f"no adapters under {root} (config.json missing)")
        if cfg is not None:
            model = self.opt.model or cfg.base
        else:
            model = self.opt.model or str(default_lm_dir(ws))
            if self.opt.model is None and not Path(model).is_dir():
                raise ArtifactError(f"no base model in {model}: run 'llmrec build-lm' first")
        model = resolve_base(model)
        template = self.opt.template
        adapters = None
        self.adapter_config = None
        self.adapter_root = root if cfg is not None else None
        recipe = serving(model)
        self.history = self.opt.history
        self.n_candidates = self.opt.n_candidates
        if cfg is not None:
            self._check_binding(cfg, model, template, explicit)
            template = template or cfg.template
            adapters = self._adapter_paths(cfg, root, explicit)
            self.adapter_config = cfg
            if self.n_candidates is None:  # rank lists of the length the adapters learned
                self.n_candidates = cfg.examples.n_candidates
        else:
            template = template or recipe.template
        self.history = recipe.history if self.history is None else self.history
        self.n_candidates = recipe.n_candidates if self.n_candidates is None else self.n_candidates
        self.assignment = shard_of(ds.user_tokens, cfg.n_shards, cfg.seed) if adapters else None
        load = self.opt.load or (cfg.load if cfg is not None else LoadOptions())
        self.generator = Generator.from_pretrained(
            model,
            self.catalog,
            adapters=adapters,
            device=self.opt.device,
            template=template,
            batch_size=self.opt.batch_size,
            top_k=self.opt.top_k,
            dtype=None if load.dtype == "auto" else load.dtype,
            device_map=load.device_map,
            attn_implementation=load.attn_implementation,
            trust_remote_code=load.trust_remote_code,
            revision=load.revision,
        )
        if cfg is not None and not explicit:
            self._check_contract(cfg)
        if self.opt.blend is not None:
            self.blend = float(self.opt.blend)
        elif self.adapter_config is None:
            self.blend = 0.0
        else:
            tuned = load_blend(ws)
            self.blend = self.adapter_config.lora.prior_weight if tuned is None else tuned

    def _check_binding(self, cfg: Any, model: str, template: str | None, explicit: bool) -> None:
        """The base and template asked for are the adapters' own (unless named explicitly)."""
        from prompts import template_ref

        if explicit:
            return
        if model != resolve_base(cfg.base):
            raise ArtifactError(
                f"the adapters were tuned on {cfg.base}, not {model}: serve without --model, "
                "with '--adapters none' for the base model alone, or name adapters with "
                "'--adapters DIR'"
            )
        if template is not None and template_ref(template) != cfg.template:
            raise ArtifactError(
                f"the adapters were tuned with template {cfg.template!r}, not {template!r}: "
                "serve without --template (or '--adapters none' / '--adapters DIR')"
            )

    def _adapter_paths(self, cfg: Any, root: Path, explicit: bool) -> dict[str, Path]:
        """Shard adapter folders; for the workspace's own: fresh, and on an unchanged base."""
        from llmrec.llm.adapters import adapter_paths, read_manifest, shard_dir, stale_shards

        if not explicit:
            stale = stale_shards(ws=self.ws)
            if stale:
                raise ArtifactError(
                    f"adapters of shards {stale} do not reflect the newest ledger version; run "
                    "'llmrec forget' to finish the pending stages"
                )
            have = weights_hash(cfg.base, cfg.load.revision)
            for s in range(cfg.n_shards):
                m = read_manifest(shard_dir(root, s)) or {}
                if m.get("base_weights_sha256") not in (None, have):
                    raise ArtifactError(
                        f"base model {cfg.base} changed since the adapters were tuned (weights "
                        "hash differs): re-tune with 'llmrec adapters tune --force'"
                    )
        return adapter_paths(self.ws, root)[1]

    def _check_contract(self, cfg: Any) -> None:
        """The tokenizer renders and encodes prompts as it did when the adapters were tuned."""
        from llmrec.llm.adapters import prompt_contract

        if not cfg.contract:
            return
        now = prompt_contract(self.generator.builder)
        for key in ("template", "template_sha256", "chat_template_sha256", "bos"):
            if key in cfg.contract and cfg.contract[key] != now[key]:
                raise ArtifactError(
                    f"prompt contract broken: {key} is {now[key]!r} now but the adapters were "
                    f"tuned with {cfg.contract[key]!r}; re-tune with 'llmrec adapters tune --force'"
                )

    def adapter_for(self, user: int) -> str | None:
        """Name of the shard adapter serving ``user`` (``None``: the base model alone)."""
        if self.assignment is None:
            return None
        return f"shard-{int(self.assignment[int(user)]):03d}"

    @property
    def view(self):
        return self.store.view

    def context(self, user: int, strategy: str | None = None) -> UserContext:
        """Prompt material of one user from the retrieval store (retained data only)."""
        got = self.store.retrieve(
            int(user),
            strategy or self.opt.strategy,
            H=self.history,
            n_candidates=self.n_candidates,
        )
        return UserContext(
            int(user),
            got["profile"],
            np.asarray(got["history_items"], dtype=np.int64),
            np.asarray(got["history_ratings"], dtype=np.float64),
            np.asarray(got["candidates"], dtype=np.int64),
        )

    def recommend(
        self,
        users: Sequence[int],
        mode: str = "likelihood",
        strategy: str | None = None,
        blend: float | None = None,
        contexts: Sequence[UserContext] | None = None,
    ) -> list[Ranking]:
        """Regenerated rankings for ``users`` (internal indices), in input order."""
        if mode not in RANK_MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(RANK_MODES)}")
        users = [int(u) for u in users]
        for u in users:
            if self.view.forgotten_users[u]:
                tok = self.ws.dataset.user_tokens[u]
                raise DataError(f"user {tok!r} has been forgotten: nothing is served for them")
        ctxs = (
            list(contexts) if contexts is not None else [self.context(u, strategy) for u in users]
        )
        weight = self.blend if blend is None else float(blend)
        out: dict[int, Ranking] = {}
        groups = (
            {None: list(range(len(users)))}
            if self.assignment is None
            else _group(self.assignment[users])
        )
        for shard, idx in groups.items():
            name = None if shard is None else f"shard-{shard:03d}"
            ranked = self.generator.rank(
                [ctxs[k] for k in idx],
                mode,
                forgotten=self.view.forgotten_items,
                adapter=name,
                scope=self.opt.scope,
            )
            for k, r in zip(idx, ranked):
                cands = ctxs[k].candidates[~self.view.forgotten_items[ctxs[k].candidates]]
                out[k] = _apply_policy(
                    self.ws, self.view, users[k], blend_ranking(r, cands, weight)
                )
        return [out[k] for k in range(len(users))]


def _apply_policy(ws: Workspace, view: Any, user: int, r: Ranking) -> Ranking:
    """Drop what the workspace's forget policy never shows ``user`` (under ``suppress``: items of
    their forgotten interactions; a catalogue-scope answer can name items outside the already
    filtered candidate list, so the served ranking is filtered too)."""
    keep = np.isin(r.items, suppress_filter(ws, view, user, r.items))
    if keep.all():
        return r
    return replace(r, items=r.items[keep], scores=r.scores[keep])


def _group(labels: np.ndarray) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for k, s in enumerate(labels.tolist()):
        groups.setdefault(int(s), []).append(k)
    return groups


# ---------------------------------------------------------------------------- scenario
@dataclass
class ScenarioConfig:
    """One forget scenario (defaults: 5% random users, their train interactions forgotten)."""

    fraction: float = 0.05
    selection: str = "random"
    kind: str = "interactions"
    neighbours: int = 10
    eval_users: str = "all"
    modes: tuple[str, ...] = MODES
    strategy: str = "preference"
    encoder: str = "text"
    n_shards: int = 4
    epochs: int | None = None  # None: the base model's recipe (llmrec.llm.recipe)
    seed: int = 2020
    ks: tuple[int, ...] = (5, 10, 20)
    blend_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
    cold_users: int = 10  # subset: users with at most this many retained train interactions
    cold_items: int = 5  # subset: test items with at most this many retained train interactions


def _score_fn(rankings: dict[int, np.ndarray], base: np.ndarray, users: np.ndarray, n: int):
    """Scores placing each user's ranking first (in order), then everything else in ``base``
    order (the candidate generator's scores)."""
    row = {int(u): k for k, u in enumerate(users)}

    def fn(batch: np.ndarray) -> np.ndarray:
        out = np.empty((len(batch), n), dtype=np.float64)
        for j, u in enumerate(batch):
            b = base[row[int(u)]]
            finite = np.isfinite(b)
            s = np.full(n, -1e12)
            if finite.any():
                lo, hi = b[finite].min(), b[finite].max()
                s[finite] = (b[finite] - lo) / ((hi - lo) or 1.0) - 2.0
            items = rankings.get(int(u), np.zeros(0, np.int64))
            s[items] = 1e6 - np.arange(len(items))
            out[j] = s
        return out

    return fn


def _metrics(res: dict, ks: Sequence[int]) -> dict[str, float]:
    keep = {f"{m}@{k}" for m in ("ndcg", "recall", "hit", "mrr") for k in ks}
    out = {k: float(v) for k, v in res.items() if k in keep}
    out["n_users"] = int(res["n_users"])
    return out


def run_scenario(
    ws: Workspace,
    config: ScenarioConfig | None = None,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Build what is missing (base LM, retrieval store, adapters), apply the forget set, and
    evaluate the regenerated rankings. Writes ``WS/runs/cragru-TIME/`` (config.json,
    versions.json, results.json, rankings.jsonl) and returns the results."""
    from llmrec.data.requests import (
        interactions_request,
        select_users,
        users_request,
    )
    from llmrec.evaluation import evaluate_model
    from llmrec.evaluation.bias import interaction_matrix, neighbours_and_controls
    from llmrec.llm.adapters import AdapterConfig, load_config, tune_adapters
    from llmrec.llm.lm_builder import build_lm
    from llmrec.llm.recipe import example_settings, lora_settings
    from llmrec.models.training import retained_data, train_model
    from llmrec.pipelines.forget import forget
    from retrieval.store import RetrievalStore

    cfg = config or ScenarioConfig()
    say = progress or (lambda m: None)
    ds, split = ws.dataset, ws.split
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        say(f"{name}: {timings[name]:.1f}s")
        return out

    lm_dir = default_lm_dir(ws)
    if not (lm_dir / "config.json").is_file():
        timed(
            "build_lm",
            lambda: build_lm(
                ds, lm_dir, seed=cfg.seed, device=device, progress=progress is not None
            ),
        )
    try:
        RetrievalStore.load(ws)
    except ArtifactError:
        timed(
            "build_store",
            lambda: RetrievalStore.build(ws, encoder=cfg.encoder, n_candidates=50, seed=cfg.seed),
        )
    serve = serving(lm_dir)
    if load_config(ws) is None:
        acfg = AdapterConfig(
            base=str(lm_dir.resolve()),
            n_shards=cfg.n_shards,
            seed=cfg.seed,
            template=serve.template or "compact",
            answer_items=serve.answer_items,
            device=device,
            lora=lora_settings(lm_dir, cfg.epochs),
            examples=example_settings(lm_dir),
        )
        timed("tune_adapters", lambda: tune_adapters(ws, acfg, progress=say))

    # ---- forget set
    sel = select_users(ds, cfg.fraction, cfg.selection, cfg.seed, mask=split.part == TRAIN)
    if cfg.kind == "user":
        request = users_request(ds, sel)
    elif cfg.kind == "interactions":
        idx = np.flatnonzero(np.isin(ds.inter_user, sel) & (split.part == TRAIN))
        request = interactions_request(ds, idx)
    else:
        raise ValueError(f"kind must be 'user' or 'interactions', got {cfg.kind!r}")
    applied = timed("forget", lambda: forget(ws, [request]))

    # ---- users to regenerate for: forget users (if still served) and their neighbours
    data = retained_data(ws)
    has_test = np.zeros(ds.n_users, bool)
    has_test[data.test[0]] = True
    alive = ~data.view.forgotten_users
    neigh, _ = neighbours_and_controls(
        interaction_matrix(ds.n_users, ds.n_items, ds.inter_user, ds.inter_item),
        sel,
        k=cfg.neighbours,
        seed=cfg.seed,
        eligible=has_test & alive,
    )
    forget_users = sel[alive[sel] & has_test[sel]]
    affected = np.union1d(forget_users, neigh)
    groups = {"all": affected, "forget": forget_users, "neighbours": neigh}
    if cfg.eval_users == "all":
        # every served user with a test item: more users, less noise in the comparison
        users = np.flatnonzero(has_test & alive)
        groups = {
            "all": users,
            "affected": affected,
            "forget": forget_users,
            "neighbours": neigh,
            "others": np.setdiff1d(users, affected),
        }
    elif cfg.eval_users == "affected":
        users = affected
    else:
        raise ValueError(f"eval_users must be 'affected' or 'all', got {cfg.eval_users!r}")
    groups["cold_users"] = cold_users(data, users, cfg.cold_users)

    tuned = load_config(ws)
    pipe = CragruPipeline(
        ws,
        CragruOptions(
            device=device,
            strategy=cfg.strategy,
            template=tuned.template if tuned is not None else serve.template,
            history=serve.history,
            n_candidates=serve.n_candidates,
        ),
    )
    ctxs = timed("retrieve", lambda: [pipe.context(int(u)) for u in users])
    base = pipe.store.candidate_scores(users)
    methods: dict[str, dict[int, np.ndarray]] = {
        "candidates": {int(c.user): c.candidates for c in ctxs}
    }
    outputs: dict[str, list[Ranking]] = {}
    for mode in cfg.modes:
        t0 = time.perf_counter()
        ranked = pipe.recommend(users, mode, contexts=ctxs, blend=0.0)
        timings[f"llm_{mode}"] = time.perf_counter() - t0
        say(f"llm_{mode}: {timings[f'llm_{mode}']:.1f}s for {len(users)} users")
        outputs[mode] = ranked
        methods[f"llm_{mode}" + ("_pure" if mode == "likelihood" else "")] = {
            r.user: r.items for r in ranked
        }

    def evaluate(rankings: dict[int, np.ndarray], part: str, who: np.ndarray) -> dict:
        fn = _score_fn(rankings, base, users, ds.n_items)
        return evaluate_model(None, data, part, who, ks=cfg.ks, score_fn=fn)

    blend_info: dict[str, Any] = {}
    if "likelihood" in outputs:
        cands = {int(c.user): c.candidates for c in ctxs}
        lik = outputs["likelihood"]

        def blended(w: float) -> dict[int, np.ndarray]:
            return {r.user: blend_ranking(r, cands[r.user], w).items for r in lik}

        grid = sorted({*cfg.blend_grid, pipe.blend})
        valid_curve = {w: evaluate(blended(w), "valid", users)["ndcg@10"] for w in grid}
        cand_valid = evaluate(methods["candidates"], "valid", users)["ndcg@10"]
        best = max(grid, key=lambda w: (valid_curve[w], -w))
        methods["llm_likelihood"] = blended(best)
        save_blend(ws, best, int(data.version), valid_curve[best], cand_valid)
        blend_info = {
            "trained_prior_weight": pipe.blend,
            "valid_tuned_blend": best,
            "valid_ndcg@10": {str(w): v for w, v in valid_curve.items()},
            "candidates_valid_ndcg@10": cand_valid,
        }

    bpr = timed("bpr_retrain", lambda: train_model(ws, "bpr", seed=cfg.seed, data=data))
    results: dict[str, Any] = {"methods": {}}
    per_user: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, rk in [*methods.items(), ("bpr_retrained", None)]:
        if rk is None:
            res = evaluate_model(bpr, data, "test", users, ks=cfg.ks, return_per_user=True)
        else:
            fn = _score_fn(rk, base, users, ds.n_items)
            res = evaluate_model(
                None, data, "test", users, ks=cfg.ks, score_fn=fn, return_per_user=True
            )
        pu = res["per_user"]
        per_user[name] = (np.asarray(pu["users"]), np.asarray(pu["ndcg@10"]))
        results["methods"][name] = {
            g: _metrics(_subset(res, who), cfg.ks) for g, who in groups.items()
        }
    subsets = _subset_quality(
        ws, data, users, methods, bpr, base, cfg, results["methods"], per_user, evaluate_model
    )
    fallbacks = {
        m: {
            "fallbacks": int(sum(r.fallback for r in rs)),
            "users": len(rs),
            "dropped": {
                k: int(sum(getattr(r.report, k) for r in rs if r.report is not None))
                for k in ("unknown", "not_candidate", "duplicate", "forgotten")
            },
        }
        for m, rs in outputs.items()
        if m != "likelihood"
    }
    forgotten_out = sum(
        int(pipe.view.forgotten_items[r.items].sum()) for rs in outputs.values() for r in rs
    )
    timings["total"] = time.perf_counter() - t_all
    summary = {
        "users": {g: int(len(v)) for g, v in groups.items()},
        "forget_set": {"kind": cfg.kind, "users": int(len(sel)), "request": request.describe()},
        "ledger_version": int(data.version),
        "stages": applied.get("stages", {}),
        "blend": blend_info,
        "parse": fallbacks,
        "forgotten_items_output": forgotten_out,
        "timings_s": timings,
        "quality": _quality(results["methods"], per_user),
        **(
            {"quality_affected": _quality(results["methods"], per_user, "affected", affected)}
            if "affected" in groups
            else {}
        ),
        **subsets,
        **results,
    }
    run = ws.new_run("cragru", {"scenario": asdict(cfg), "device": device})
    atomic_write_json(run / "results.json", summary)
    lines = []
    for rs in outputs.values():
        for r in rs:
            lines.append(
                json.dumps(r.to_dict(ds.item_tokens) | {"user": str(ds.user_tokens[r.user])})
            )
    atomic_write_text(run / "rankings.jsonl", "\n".join(lines) + "\n")
    summary["run_dir"] = str(run)
    return summary


def _subset_quality(
    ws: Workspace,
    data: Any,
    users: np.ndarray,
    methods: dict[str, dict[int, np.ndarray]],
    bpr: Any,
    base: np.ndarray,
    cfg: ScenarioConfig,
    table: dict[str, dict],
    per_user: dict[str, tuple[np.ndarray, np.ndarray]],
    evaluate_model: Callable[..., dict],
) -> dict[str, Any]:
    """The paired comparison on the two subsets where text and profile should matter most:

    * ``quality_cold_users``: users with at most ``cfg.cold_users`` retained train interactions;
    * ``quality_cold_items``: test items with at most ``cfg.cold_items`` retained train
      interactions -- each user's test set restricted to those items (their other test items
      are masked, neither hits nor misses), over the users that have one.

    Adds the subsets' rows to ``table`` (group ``cold_users`` / ``cold_items``)."""
    from llmrec.data.parts import RetainedData

    cold_u = cold_users(data, users, cfg.cold_users)
    out: dict[str, Any] = {}
    if "cold_users" in next(iter(table.values()), {}):
        out["quality_cold_users"] = _quality(table, per_user, "cold_users", cold_u)

    deg = np.bincount(data.train[1], minlength=ws.dataset.n_items)
    tu, ti = data.test
    cold = deg[ti] <= cfg.cold_items
    shifted = RetainedData(
        data.view,
        data.train,
        (np.concatenate([data.valid[0], tu[~cold]]), np.concatenate([data.valid[1], ti[~cold]])),
        (tu[cold], ti[cold]),
    )
    who = np.intersect1d(users, tu[cold])
    cold_pu: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, rk in [*methods.items(), ("bpr_retrained", None)]:
        if not len(who):
            break
        if rk is None:
            res = evaluate_model(bpr, shifted, "test", who, ks=cfg.ks, return_per_user=True)
        else:
            fn = _score_fn(rk, base, users, ws.dataset.n_items)
            res = evaluate_model(
                None, shifted, "test", who, ks=cfg.ks, score_fn=fn, return_per_user=True
            )
        pu = res["per_user"]
        cold_pu[name] = (np.asarray(pu["users"]), np.asarray(pu["ndcg@10"]))
        table[name]["cold_items"] = _metrics(res, cfg.ks)
    out["quality_cold_items"] = _quality(table, cold_pu, "cold_items") if cold_pu else {}
    out["subsets"] = {
        "cold_users": {"max_train_interactions": cfg.cold_users, "users": int(len(cold_u))},
        "cold_items": {
            "max_train_interactions": cfg.cold_items,
            "test_pairs": int(cold.sum()),
            "users": int(len(who)),
        },
    }
    return out


def cold_users(data: Any, users: np.ndarray, max_train: int) -> np.ndarray:
    """The ``users`` with at most ``max_train`` retained train interactions."""
    n_train = np.bincount(data.train[0], minlength=len(data.view.forgotten_users))
    return users[n_train[users] <= max_train]


def _subset(res: dict[str, Any], who: np.ndarray) -> dict[str, Any]:
    """Metrics of an ``evaluate_ranking(..., return_per_user=True)`` result over ``who``."""
    pu = res["per_user"]
    keep = np.isin(pu["users"], who)
    out: dict[str, Any] = {
        k: float(np.asarray(v)[keep].mean()) if keep.any() else 0.0
        for k, v in pu.items()
        if k != "users"
    }
    out["n_users"] = int(keep.sum())
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> dict[str, Any]:
    """Paired comparison of per-user metrics ``a`` and ``scale * b`` (same users, same order):
    mean difference, its standard error, a two-sided paired t-test and a two-sided Wilcoxon
    signed-rank test, and the counts of users where ``a`` wins, loses or ties."""
    from scipy import stats

    d = np.asarray(a, np.float64) - scale * np.asarray(b, np.float64)
    n = len(d)
    out: dict[str, Any] = {"n_users": n, "mean_diff": float(d.mean()) if n else 0.0}
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    out["std_err"] = se
    out["ci95"] = [out["mean_diff"] - 1.96 * se, out["mean_diff"] + 1.96 * se]
    nz = d[d != 0]
    out["t_p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue) if n > 1 and se > 0 else 1.0
    out["wilcoxon_p_value"] = float(stats.wilcoxon(nz).pvalue) if len(nz) else 1.0
    out["wins"], out["losses"] = int((d > 0).sum()), int((d < 0).sum())
    out["ties"] = n - out["wins"] - out["losses"]
    return out


def _quality(
    methods: dict[str, dict],
    per_user: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    group: str = "all",
    who: np.ndarray | None = None,
) -> dict[str, Any]:
    """Acceptance-2 check on one group of evaluated users (default all): LLM vs candidate order
    vs retrained BPR, with paired per-user differences (same users) and their uncertainty."""

    def get(m: str) -> float | None:
        return methods[m][group]["ndcg@10"] if m in methods else None

    llm, cand, bpr = get("llm_likelihood"), get("candidates"), get("bpr_retrained")
    if llm is None or cand is None or bpr is None:
        return {}
    out = {
        "users": group,
        "llm_ndcg@10": llm,
        "llm_pure_ndcg@10": get("llm_likelihood_pure"),
        "candidates_ndcg@10": cand,
        "bpr_retrained_ndcg@10": bpr,
        "llm_beats_candidates": llm > cand,
        "llm_gain_over_candidates": llm / cand - 1.0 if cand else None,
        "llm_over_bpr": llm / bpr if bpr else None,
        "llm_reaches_0.85_bpr": bool(bpr and llm >= 0.85 * bpr),
    }
    if per_user and {"llm_likelihood", "candidates", "bpr_retrained"} <= set(per_user):
        (u0, llm_u), (u1, cand_u), (u2, bpr_u) = (
            per_user[m] for m in ("llm_likelihood", "candidates", "bpr_retrained")
        )
        if np.array_equal(u0, u1) and np.array_equal(u0, u2):
            keep = np.ones(len(u0), bool) if who is None else np.isin(u0, who)
            vs_cand = paired_difference(llm_u[keep], cand_u[keep])
            out["paired_llm_minus_candidates"] = vs_cand
            out["paired_llm_minus_0.85_bpr"] = paired_difference(llm_u[keep], bpr_u[keep], 0.85)
            # one-sided paired t-test at 5%: the LLM's gain is more than noise across users
            out["llm_beats_candidates_significant"] = bool(
                vs_cand["mean_diff"] > 0 and vs_cand["t_p_value"] / 2 < 0.05
            )
    return out


def format_results(summary: dict[str, Any]) -> str:
    """The NDCG@10 / Recall@10 table printed by the scenario."""
    rows = [f"{'method':34s} {'group':11s} {'users':>5s} {'NDCG@10':>8s} {'Recall@10':>9s}"]
    for name, groups in summary["methods"].items():
        for g, m in groups.items():
            rows.append(
                f"{name:34s} {g:11s} {m['n_users']:5d} {m.get('ndcg@10', 0):8.4f} "
                f"{m.get('recall@10', 0):9.4f}"
            )
    for qkey in ("quality", "quality_affected", "quality_cold_users", "quality_cold_items"):
        q = summary.get(qkey, {})
        if not q:
            continue
        ratio = lambda a, b: f"{a / b:.4f}" if b else "n/a"  # noqa: E731
        rows.append(
            f"[{q['users']} users] LLM/candidates "
            f"{ratio(q['llm_ndcg@10'], q['candidates_ndcg@10'])}  "
            f"LLM alone/candidates {ratio(q['llm_pure_ndcg@10'] or 0, q['candidates_ndcg@10'])}  "
            f"LLM/BPR-retrained {ratio(q['llm_ndcg@10'], q['bpr_retrained_ndcg@10'])}"
        )
        for key, label in (
            ("paired_llm_minus_candidates", "LLM - candidates"),
            ("paired_llm_minus_0.85_bpr", "LLM - 0.85*BPR"),
        ):
            d = q.get(key)
            if d:
                rows.append(
                    f"  paired NDCG@10 {label}: {d['mean_diff']:+.4f} +- {d['std_err']:.4f} "
                    f"(s.e., {d['n_users']} users; t p={d['t_p_value']:.3g}, Wilcoxon "
                    f"p={d['wilcoxon_p_value']:.3g}; wins/losses/ties "
                    f"{d['wins']}/{d['losses']}/{d['ties']})"
                )
    return "\n".join(rows)
