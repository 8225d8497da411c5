"""The CRAGRU forget scenario: apply a forget set through every stage, regenerate, compare.

:func:`run_scenario` selects a forget set, applies it through every stage of the ledger
(retrieval, adapters, ...), regenerates recommendations for every served user with a test item
(``eval_users="all"``; ``"affected"``: the forget users and their neighbours only -- they are
reported as their own groups either way), and compares on the same users, RecBole protocol
restricted to the candidate list (items outside the candidates rank after them, in the
generator's order): the LLM ranking, the co-occurrence candidate model's own order and BPR-MF retrained on
the retained data. The quality block gives the three NDCG@10 and the paired per-user differences
(LLM - candidates, LLM - 0.85 x BPR) with their standard error, a paired t-test and a Wilcoxon
signed-rank test (:func:`llmrec.evaluation.paired.paired_difference`). Serving itself is
:mod:`llmrec.serving.cragru`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from llmrec.data.split import TRAIN
from llmrec.errors import ArtifactError
from llmrec.evaluation.paired import paired_difference
from llmrec.evaluation.ranking import ranking_first_scores
from llmrec.io import atomic_write_json, atomic_write_text
from llmrec.llm.backends import MODES, Ranking
from llmrec.llm.recipe import serving
from llmrec.serving.cragru import (
    BLEND_GRID,
    CragruOptions,
    CragruPipeline,
    blend_ranking,
    choose_blend,
    default_lm_dir,
    group_weight,
    save_blend,
)
from llmrec.workspace import Workspace


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
    recipe: str = "quality"  # a named recipe of llmrec.llm.recipe.RECIPES (its default)
    seed: int = 2020
    ks: tuple[int, ...] = (5, 10, 20)
    blend_grid: tuple[float, ...] = BLEND_GRID
    cold_users: int = 10  # subset: users with at most this many retained train interactions
    cold_items: int = 5  # subset: test items with at most this many retained train interactions


def _score_fn(rankings: dict[int, np.ndarray], base: np.ndarray, users: np.ndarray, n: int):
    """Scores placing each user's ranking first (in order), then everything else in ``base``
    order (the co-occurrence candidate model's scores)."""
    row = {int(u): k for k, u in enumerate(users)}
    none = np.zeros(0, np.int64)

    def fn(batch: np.ndarray) -> np.ndarray:
        out = np.empty((len(batch), n), dtype=np.float64)
        for j, u in enumerate(batch):
            out[j] = ranking_first_scores(rankings.get(int(u), none), base[row[int(u)]], n)
        return out

    return fn


def _metrics(res: dict, ks: Sequence[int]) -> dict[str, float]:
    keep = {f"{m}@{k}" for m in ("ndcg", "recall", "hit", "mrr") for k in ks}
    out = {k: float(v) for k, v in res.items() if k in keep}
    out["n_users"] = int(res["n_users"])
    return out


class _Clock:
    """Per-step wall seconds (in the order the steps ran), each reported through ``say``."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.timings[name] = time.perf_counter() - t0
        self.say(f"{name}: {self.timings[name]:.1f}s")
        return out


def _build_missing(ws: Workspace, cfg: ScenarioConfig, device: str, clock: _Clock, verbose: bool):
    """Build what the workspace lacks (base LM, retrieval store, adapters); the LM's serving
    settings."""
    from llmrec.llm.adapters import AdapterConfig, load_config, tune_adapters
    from llmrec.llm.lm_builder import build_lm
    from llmrec.llm.recipe import example_settings, lora_settings
    from retrieval.store import RetrievalStore

    lm_dir = default_lm_dir(ws)
    if not (lm_dir / "config.json").is_file():
        clock(
            "build_lm",
            lambda: build_lm(ws.dataset, lm_dir, seed=cfg.seed, device=device, progress=verbose),
        )
    try:
        RetrievalStore.load(ws)
    except ArtifactError:
        clock(
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
            lora=lora_settings(lm_dir, cfg.epochs, recipe=cfg.recipe),
            examples=example_settings(lm_dir, cfg.recipe),
        )
        clock("tune_adapters", lambda: tune_adapters(ws, acfg, progress=clock.say))
    return serve


def _forget_set(ws: Workspace, cfg: ScenarioConfig):
    """The selected users and the request forgetting them (or their train interactions)."""
    from llmrec.data.requests import interactions_request, select_users, users_request

    ds, split = ws.dataset, ws.split
    sel = select_users(ds, cfg.fraction, cfg.selection, cfg.seed, mask=split.part == TRAIN)
    if cfg.kind == "user":
        return sel, users_request(ds, sel)
    if cfg.kind == "interactions":
        idx = np.flatnonzero(np.isin(ds.inter_user, sel) & (split.part == TRAIN))
        return sel, interactions_request(ds, idx)
    raise ValueError(f"kind must be 'user' or 'interactions', got {cfg.kind!r}")


def _user_groups(ws: Workspace, data: Any, sel: np.ndarray, cfg: ScenarioConfig):
    """The users to regenerate for and the named groups they are reported in: the forget users
    (if still served) and their neighbours, or every served user with a test item."""
    from llmrec.evaluation.bias import interaction_matrix, neighbours_and_controls

    ds = ws.dataset
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
    return users, groups, affected


def _regenerate(pipe: CragruPipeline, users: np.ndarray, cfg: ScenarioConfig, clock: _Clock):
    """Retrieve every user's context once, rank in every mode (pure LM: ``blend=0``); the
    prompts' contexts, the candidate scores and each method's rankings."""
    ctxs = clock("retrieve", lambda: [pipe.context(int(u)) for u in users])
    base = pipe.store.candidate_scores(users)
    methods: dict[str, dict[int, np.ndarray]] = {
        "candidates": {int(c.user): c.candidates for c in ctxs}
    }
    outputs: dict[str, list[Ranking]] = {}
    for mode in cfg.modes:
        t0 = time.perf_counter()
        ranked = pipe.recommend(users, mode, contexts=ctxs, blend=0.0)
        clock.timings[f"llm_{mode}"] = time.perf_counter() - t0
        clock.say(f"llm_{mode}: {clock.timings[f'llm_{mode}']:.1f}s for {len(users)} users")
        outputs[mode] = ranked
        methods[f"llm_{mode}" + ("_pure" if mode == "likelihood" else "")] = {
            r.user: r.items for r in ranked
        }
    return ctxs, base, methods, outputs


#: fewest cold users with which the scenario tunes them their own blend weight
MIN_COLD_USERS = 10


def _tune_blend(ws, pipe, data, users, ctxs, outputs, methods, cfg, evaluate) -> dict[str, Any]:
    """Grid-search the likelihood blend on VALID, store it as the served default and add the
    blended ranking as ``llm_likelihood`` to ``methods``.

    Users with at most ``cfg.cold_users`` retained train interactions (as the pipeline counts
    them) get their own weight, tuned on their VALID part, the others one weight tuned on
    theirs (VALID NDCG is a mean over users, so the two choices are the joint optimum); the cold
    users' own weight is served only when it beats the common one on their VALID part
    (:func:`~llmrec.serving.cragru.group_weight`)."""
    if "likelihood" not in outputs:
        return {}
    cands = {int(c.user): c.candidates for c in ctxs}
    lik = outputs["likelihood"]
    n_train = np.array([pipe.n_history(u) for u in users])
    cold = users[n_train <= cfg.cold_users]
    warm = users[n_train > cfg.cold_users]
    if len(cold) < MIN_COLD_USERS or not len(warm):
        cold, warm = cold[:0], users

    is_cold = set(cold.tolist())

    def blended(w: float, w_cold: float | None = None) -> dict[int, np.ndarray]:
        return {
            r.user: blend_ranking(
                r, cands[r.user], w if w_cold is None or r.user not in is_cold else w_cold
            ).items
            for r in lik
        }

    grid = sorted({*cfg.blend_grid, pipe.blend})
    best, valid_curve = choose_blend(lambda w: evaluate(blended(w), "valid", warm)["ndcg@10"], grid)
    info: dict[str, Any] = {}
    best_cold = None
    if len(cold):
        # the cold users' per-user VALID NDCG@10 at every weight, evaluated once
        per = {
            float(w): np.asarray(
                evaluate(blended(w), "valid", cold, per_user=True)["per_user"]["ndcg@10"]
            )
            for w in grid
        }
        tuned_cold, cold_curve = choose_blend(lambda w: per[w].mean(), grid)
        best_cold, gain = group_weight(tuned_cold, best, per[tuned_cold], per[best])
        info["cold_users"] = {
            "max_train": cfg.cold_users,
            "users": int(len(cold)),
            "blend": best_cold,
            "tuned_blend": tuned_cold,
            "valid_gain_over_common": gain,
            "valid_ndcg@10": {str(w): v for w, v in cold_curve.items()},
        }
    cand_valid = evaluate(methods["candidates"], "valid", users)["ndcg@10"]
    methods["llm_likelihood"] = blended(best, best_cold)
    valid_best = evaluate(methods["llm_likelihood"], "valid", users)["ndcg@10"]
    save_blend(ws, best, int(data.version), valid_best, cand_valid, info.get("cold_users"))
    return {
        "trained_prior_weight": pipe.blend,
        "valid_tuned_blend": best,
        "valid_ndcg@10": {str(w): v for w, v in valid_curve.items()},
        "served_valid_ndcg@10": valid_best,
        "candidates_valid_ndcg@10": cand_valid,
        **info,
    }


def _parse_counts(outputs: dict[str, list[Ranking]]) -> dict[str, dict]:
    """Per generation mode (likelihood never parses): fallbacks and dropped answer items."""
    return {
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


def run_scenario(
    ws: Workspace,
    config: ScenarioConfig | None = None,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Build what is missing (base LM, retrieval store, adapters), apply the forget set, and
    evaluate the regenerated rankings. Writes ``WS/runs/cragru-TIME/`` (config.json,
    versions.json, results.json, rankings.jsonl) and returns the results."""
    from llmrec.evaluation import evaluate_model
    from llmrec.forget.runner import forget
    from llmrec.llm.adapters import load_config
    from llmrec.models.training import retained_data, train_model

    cfg = config or ScenarioConfig()
    clock = _Clock(progress or (lambda m: None))
    ds = ws.dataset
    t_all = time.perf_counter()
    serve = _build_missing(ws, cfg, device, clock, progress is not None)
    sel, request = _forget_set(ws, cfg)
    applied = clock("forget", lambda: forget(ws, [request]))
    data = retained_data(ws)
    users, groups, affected = _user_groups(ws, data, sel, cfg)

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
    ctxs, base, methods, outputs = _regenerate(pipe, users, cfg, clock)

    def evaluate(rankings: dict[int, np.ndarray], part: str, who: np.ndarray, per_user=False):
        fn = _score_fn(rankings, base, users, ds.n_items)
        return evaluate_model(
            None, data, part, who, ks=cfg.ks, score_fn=fn, return_per_user=per_user
        )

    blend_info = _tune_blend(ws, pipe, data, users, ctxs, outputs, methods, cfg, evaluate)
    bpr = clock("bpr_retrain", lambda: train_model(ws, "bpr", seed=cfg.seed, data=data))
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
    forgotten_out = sum(
        int(pipe.view.forgotten_items[r.items].sum()) for rs in outputs.values() for r in rs
    )
    clock.timings["total"] = time.perf_counter() - t_all
    summary = {
        "users": {g: int(len(v)) for g, v in groups.items()},
        "forget_set": {"kind": cfg.kind, "users": int(len(sel)), "request": request.describe()},
        "ledger_version": int(data.version),
        "stages": applied.get("stages", {}),
        "blend": blend_info,
        "parse": _parse_counts(outputs),
        "forgotten_items_output": forgotten_out,
        "timings_s": clock.timings,
        "quality": _quality(results["methods"], per_user),
        **(
            {"quality_affected": _quality(results["methods"], per_user, "affected", affected)}
            if "affected" in groups
            else {}
        ),
        **subsets,
        **results,
    }
    summary["run_dir"] = str(_write_run(ws, cfg, device, summary, outputs))
    return summary


def _write_run(ws: Workspace, cfg: ScenarioConfig, device: str, summary: dict, outputs: dict):
    """``runs/cragru-TIME/``: the settings, ``results.json`` and every ranking (dataset ids)."""
    ds = ws.dataset
    run = ws.new_run("cragru", {"scenario": asdict(cfg), "device": device})
    atomic_write_json(run / "results.json", summary)
    lines = []
    for rs in outputs.values():
        for r in rs:
            lines.append(
                json.dumps(r.to_dict(ds.item_tokens) | {"user": str(ds.user_tokens[r.user])})
            )
    atomic_write_text(run / "rankings.jsonl", "\n".join(lines) + "\n")
    return run


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
