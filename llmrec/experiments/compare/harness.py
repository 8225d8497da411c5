"""The comparison harness: one forget request through every method, measured the same way.

For each seed: train the base model on the data before the request (the *original*), build the
request from the scenario, run every method on it, and measure per method

* utility (RecBole full ranking) for all retained users, forget users (on their original test
  pairs: lower is more forgotten, compare with retrain), neighbours and controls;
* completeness: forgotten-pair rank and membership-inference AUC (embedding methods), the
  exact-equivalence status (LLM path);
* propagation bias against the method's *own* gold and original (docs/design.md §5.1-5.2): for an embedding
  unlearner the retrained and the trained base model, for the LLM path its from-scratch rebuild
  and its pre-forget serving (:attr:`MethodOutput.gold_fn`, :attr:`MethodOutput.original_fn`),
  and the collateral change on the users it re-fitted (e.g. the re-tuned shards' users);
* CURE4Rec's A-IGF and shardGF (:mod:`llmrec.evaluation.fairness`);
* a check that the retrained gold is trustworthy (VALID NDCG against the original's);
* attribute leakage when attributes are forgotten;
* wall seconds, peak memory and the speed-up over retraining in the same run.

Methods are the classes of the one method registry (:mod:`llmrec.unlearning.registry`), by
name: embedding unlearners and the LLM path (:mod:`llmrec.experiments.compare.llm`); each run
returns a :class:`MethodOutput` whose ``score_fn`` ranks all items for a batch of users.
``stream:N`` scenarios are run by :mod:`llmrec.experiments.compare.stream`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from llmrec.data.split import TEST
from llmrec.errors import LlmrecError
from llmrec.evaluation.bias import (
    PerUser,
    interaction_matrix,
    neighbours_and_controls,
    propagation_bias,
)
from llmrec.experiments.compare import llm as _llm_methods  # noqa: F401  (registers cragru*)
from llmrec.experiments.compare.base import (
    Context,
    MethodOutput,
    evaluate_users,
    pairs,
    train_original,
    valid_ndcg,
)
from llmrec.experiments.compare.embedding import run_embedding
from llmrec.experiments.compare.llm import check_llm_base, scratch_dir
from llmrec.experiments.compare.scenario import REQUEST_KIND, Scenario
from llmrec.experiments.compare.stream import run_stream_seed
from llmrec.progress import phase
from llmrec.unlearning.registry import get_method
from llmrec.workspace import Workspace


def method_handles(name: str, kind: str) -> bool:
    """Whether the registered method ``name`` can honour requests of scenario ``kind``."""
    return skip_reason(name, kind) is None


def skip_reason(name: str, kind: str) -> str | None:
    """Why the registered method ``name`` cannot honour scenario ``kind`` (``None``: it can)."""
    req_kind = REQUEST_KIND.get(kind)
    handles = get_method(name).handles
    if req_kind is None or req_kind in handles:
        return None
    return (
        f"it handles only {', '.join(handles)} requests, and this scenario sends {req_kind} "
        "requests"
    )


def run_method(ctx: Context, name: str) -> MethodOutput:
    """The registered method ``name`` on the context's request: an embedding unlearner through
    :func:`~llmrec.experiments.compare.embedding.run_embedding`, an LLM-family method by its own
    ``run``."""
    cls = get_method(name)
    if cls.family == "embedding":
        return run_embedding(ctx, cls)
    return cls.create(ctx.seed).run(ctx)


def _summary(
    res: dict, keys=("ndcg@10", "recall@10", "hit@10", "mrr@10", "ndcg@20", "recall@20")
) -> dict:
    return {k: float(res[k]) for k in keys if k in res} | {"n_users": int(res["n_users"])}


def _group_metrics(per: dict, users: np.ndarray, k: int = 10) -> dict:
    """Mean NDCG/Recall@k over ``users`` from per-user arrays."""
    pos = np.isin(per["users"], users)
    if not pos.any():
        return {"ndcg@10": float("nan"), "recall@10": float("nan"), "n_users": 0}
    return {
        f"ndcg@{k}": float(np.mean(per[f"ndcg@{k}"][pos])),
        f"recall@{k}": float(np.mean(per[f"recall@{k}"][pos])),
        "n_users": int(pos.sum()),
    }


#: retrain is trusted as the gold only if its VALID NDCG@10 on the retained users is at least
#: this fraction of the original model's on the same users (checked on every run)
RETRAIN_TOLERANCE = 0.10


def retrain_check(ws: Workspace, after, retrain_fn, original_fn, users, excl, k: int = 10) -> dict:
    """Is the retrained gold trustworthy? Its VALID NDCG@k on ``users`` against the original's."""
    r, n = valid_ndcg(retrain_fn, ws, after.keep, users, excl, k)
    o, _ = valid_ndcg(original_fn, ws, after.keep, users, excl, k)
    ok = r >= (1 - RETRAIN_TOLERANCE) * o
    out = {
        f"retrain_valid_ndcg@{k}": r,
        f"original_valid_ndcg@{k}": o,
        "n_users": n,
        "tolerance": RETRAIN_TOLERANCE,
        "ok": bool(ok),
    }
    if not ok:
        out["warning"] = (
            f"retrain's VALID NDCG@{k} {r:.4f} is more than {RETRAIN_TOLERANCE:.0%} below the "
            f"original's {o:.4f} on the same {n} users: the gold may be undertrained"
        )
    return out


def _references(o: MethodOutput, base: str) -> dict:
    if o.references:
        return o.references
    return {
        "gold": f"retrain: {base} from scratch on the retained data",
        "original": f"{base} trained before the request",
    }


def run_seed(
    ws: Workspace,
    scenario: Scenario,
    methods: Sequence[str],
    base: str,
    seed: int,
    run_dir: Path,
    k_neighbours: int = 10,
    k: int = 10,
    log: Callable[[str], None] = lambda s: None,
    completeness: bool = True,
    model_overrides: dict | None = None,
    verify_exact: bool = True,
    fairness_ndcg: str = "recbole",
    candidate_source: str = "ease",
    eval_users: int | None = None,
    llm_base: str | None = None,
) -> dict:
    """All methods on one seed. Returns the per-method results (with per-user data).

    Every method is judged against its own references (:attr:`MethodOutput.gold_fn`,
    :attr:`MethodOutput.original_fn`); utility is compared across families on the same users.
    ``eval_users``: score a seeded sample of at most that many users (:func:`sample_users`)
    instead of every retained user -- it bounds what a slow method serves; ``llm_base``: the LLM
    path's base model (:func:`llmrec.experiments.compare.llm.resolve_llm_base`).
    """
    from llmrec.evaluation.fairness import default_shards, fairness
    from llmrec.unlearning.base import make_task

    if scenario.kind == "stream":
        return run_stream_seed(
            ws,
            scenario,
            methods,
            base,
            seed,
            run_dir,
            k,
            log,
            model_overrides or {},
            **({} if eval_users is None else {"eval_users": eval_users}),
            llm_base=llm_base,
        )
    ds = ws.dataset
    before = ws.view()
    requests, forget_users = scenario.build(ws, before, seed)
    task = make_task((ds, ws.split, before), requests)
    after = task.after
    with phase(f"seed {seed}: original {base}"):
        original, secs = train_original(ws, base, seed, before, task.train_before, model_overrides)
    log(f"seed {seed}: original {base} trained in {secs:.1f}s; {requests[0].describe()}")
    excl = after.forgotten_items if after.forgotten_items.any() else None
    alive = np.flatnonzero(~after.forgotten_users)
    te_after = pairs(ws, after.keep, TEST)
    has_test = np.zeros(ds.n_users, dtype=bool)
    has_test[te_after[0]] = True
    # neighbours / controls from the original interaction rows (train part before the request)
    if len(forget_users):
        mat = interaction_matrix(ds.n_users, ds.n_items, *task.train_before)
        neighbours, controls = neighbours_and_controls(
            mat, forget_users, k_neighbours, seed, eligible=has_test & ~after.forgotten_users
        )
    else:
        neighbours = controls = np.zeros(0, dtype=np.int64)
    sample, scored_forget = None, forget_users
    if eval_users is not None:
        # drawn among the users with a test pair (the others add nothing to a metric)
        alive, neighbours, controls, scored_forget = sample_users(
            alive[has_test[alive]], neighbours, controls, forget_users, eval_users, seed
        )
        sample = {
            "users": int(len(alive)),
            "of": int((~after.forgotten_users).sum()),
            "forget_users": int(len(scored_forget)),
        }
        log(f"seed {seed}: scoring a seeded sample of {sample['users']} of {sample['of']} users")
    reference_users = np.union1d(neighbours, controls)
    ctx = Context(
        ws,
        base,
        seed,
        requests,
        before,
        after,
        original,
        task,
        run_dir,
        {
            "verify_exact": verify_exact,
            "reference_users": reference_users,
            "candidate_source": candidate_source,
            "llm_base": llm_base,
        },
    )

    outputs: dict[str, MethodOutput] = {}
    attribute_only = scenario.kind == "attribute"
    order = [m for m in methods if m != "retrain"]
    if not attribute_only:
        order = ["retrain", *order]  # the embedding unlearners' gold, always run first
    wall: dict[str, float] = {}
    for name in order:
        t = time.perf_counter()
        with phase(f"seed {seed}: {name}"):
            outputs[name] = run_method(ctx, name)
        wall[name] = time.perf_counter() - t
        log(f"  {name}: {outputs[name].seconds:.2f}s (wall {wall[name]:.1f}s)")

    eval_after, serving = {}, {}
    for n, o in outputs.items():
        # a method that served this state already (the LLM path ranks the reference users
        # while it tunes its blend on VALID) reports it as its ``serve_after`` phase
        before_eval = float((o.info or {}).get("phase_seconds", {}).get("serve_after", 0.0))
        t = time.perf_counter()
        with phase(f"seed {seed}: {n}: serving and scoring {len(alive)} users"):
            eval_after[n] = evaluate_users(o.score_fn, ws, after.keep, alive, excl, k)
        serving[n] = before_eval + time.perf_counter() - t
    # the original model, on the same retained users, for the "versus original" bias
    eval_original = evaluate_users(original.score, ws, after.keep, alive, excl, k)
    base_orig = PerUser.from_eval(eval_original, k)
    # an attribute request removes no interaction: retraining would reproduce the original
    base_gold = base_orig if attribute_only else PerUser.from_eval(eval_after["retrain"], k)
    retrain_seconds = float("nan") if attribute_only else outputs["retrain"].seconds
    check = (
        None
        if attribute_only
        else retrain_check(ws, after, outputs["retrain"].score_fn, original.score, alive, excl, k)
    )
    if check is not None and not check["ok"]:
        log(f"  WARNING: {check['warning']}")
    train_counts = np.bincount(task.train[0], minlength=ds.n_users)
    fallback_shards = default_shards(ds.n_users, seed)

    def own(o: MethodOutput, fn, fallback: PerUser, users: np.ndarray) -> PerUser | None:
        """A method's own reference on ``users``; an embedding unlearner's are the base
        model's; ``None`` when the method has none (the LLM path without its rebuild)."""
        if fn is None:
            return fallback if o.family == "embedding" else None
        return PerUser.from_eval(evaluate_users(fn, ws, after.keep, users, excl, k), k)

    def measure(name: str) -> dict:
        """One method's entry: utility, fairness, bias, collateral, completeness."""
        o = outputs[name]
        ev = eval_after[name]
        per = ev["per_user"]
        entry: dict = {
            "family": o.family,
            "references": _references(o, base),
            "seconds": o.seconds,
            # serving every retained user once after the request (rank + score), and the
            # method's whole run (building, its gold's rebuild, pre-request serving included)
            "serving_seconds": serving[name],
            "wall_seconds": wall[name],
            "peak_memory_mb": o.peak_memory_mb,
            "speedup_vs_retrain": retrain_seconds / o.seconds if o.seconds > 0 else float("nan"),
            "utility": {
                "all": _summary(ev),
                "neighbours": _group_metrics(per, neighbours, k),
                "controls": _group_metrics(per, controls, k),
            },
            "fairness": fairness(
                ev,
                te_after,
                train_counts,
                fallback_shards if o.user_shards is None else o.user_shards,
                k,
                fairness_ndcg,
                own_shards=o.user_shards is not None,
            ),
            "info": o.info,
        }
        if len(scored_forget):
            fe = evaluate_users(o.score_fn, ws, before.keep, scored_forget, excl, k)
            entry["utility"]["forget"] = _summary(fe)
        if len(neighbours):
            pu = PerUser.from_eval(ev, k)
            # the gold on the same users as the method (same serving batches, so an exact
            # path gives bit-identical scores); the original only exists for the reference
            # users (ranked before the request was applied)
            gold = own(o, o.gold_fn, base_gold, alive)
            orig = own(o, o.original_fn, base_orig, np.intersect1d(reference_users, alive))
            entry["bias"] = {}
            if gold is not None:
                entry["bias"]["vs_gold"] = propagation_bias(pu, gold, neighbours, controls, k)
            if orig is not None:
                entry["bias"]["vs_original"] = propagation_bias(pu, orig, neighbours, controls, k)
                entry["collateral"] = _collateral(pu, orig, o, reference_users, after, k)
        entry["completeness"] = _completeness(ctx, o) if completeness else {"exact": o.exact}
        if scenario.kind == "attribute" and o.user_embeddings is not None:
            entry["attribute_leakage"] = _leakage(ctx, o.user_embeddings, scenario.attributes, seed)
        return entry

    results: dict[str, dict] = {}
    for name in [m for m in methods if m in outputs]:
        with phase(f"seed {seed}: {name}: bias, fairness and completeness"):
            results[name] = measure(name)
    _gain_over_candidates(results, eval_after, k)
    if scenario.kind == "attribute":
        results.setdefault("_original", {})["attribute_leakage"] = _leakage(
            ctx, original.user_embeddings().detach().cpu().numpy(), scenario.attributes, seed
        )
    return {
        "seed": seed,
        "requests": [r.describe() for r in requests],
        "forget_users": forget_users.tolist(),
        "neighbours": neighbours.tolist(),
        "controls": controls.tolist(),
        "original_utility": _summary(eval_original),
        "original_config": {k_: v for k_, v in original.config.items() if k_ != "device"},
        "retrain_seconds": retrain_seconds,
        "retrain_check": check,
        "evaluated_sample": sample,
        "methods": results,
    }


def sample_users(
    alive: np.ndarray,
    neighbours: np.ndarray,
    controls: np.ndarray,
    forget_users: np.ndarray,
    n: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded sample of at most ``n`` scored users, the same for every method (so the
    comparison stays paired): up to a quarter neighbours, a quarter controls (the propagation
    bias needs both groups), the rest other retained users; forget users are sampled to a
    quarter too (scored on their pre-request test pairs). ``alive``: the users that may be
    drawn (retained, with a test pair). Returns ``(alive, neighbours,
    controls, forget_users)``, each sorted; unchanged when there are at most ``n`` users."""
    if n < 1:
        raise LlmrecError(f"the evaluated user sample must be at least 1, got {n}")
    if len(alive) <= n:
        return alive, neighbours, controls, forget_users
    rng = np.random.default_rng([seed, 7919])

    def take(pool: np.ndarray, m: int) -> np.ndarray:
        pool = np.asarray(pool, dtype=np.int64)
        return np.sort(rng.choice(pool, size=min(m, len(pool)), replace=False))

    quarter = max(n // 4, 1)
    nb = take(neighbours, quarter)
    ct = take(controls, quarter)
    rest = take(np.setdiff1d(alive, np.union1d(nb, ct)), n - len(nb) - len(ct))
    return np.union1d(np.union1d(nb, ct), rest), nb, ct, take(forget_users, quarter)


def _gain_over_candidates(results: dict, eval_after: dict, k: int) -> None:
    """Per LLM-path method, its NDCG@k minus the candidate order's (method ``candidates``),
    paired per user over the same retained users (``results[m]["gain_over_candidates"]``)."""
    from llmrec.evaluation.paired import paired_difference

    if "candidates" not in eval_after:
        return
    ref = eval_after["candidates"]["per_user"]
    for name, entry in results.items():
        if entry["family"] != "llm" or name == "candidates":
            continue
        per = eval_after[name]["per_user"]
        if np.array_equal(per["users"], ref["users"]):
            entry["gain_over_candidates"] = {
                "metric": f"ndcg@{k}",
                **paired_difference(per[f"ndcg@{k}"], ref[f"ndcg@{k}"]),
            }


def _collateral(
    pu: PerUser, orig: PerUser, o: MethodOutput, users: np.ndarray, after, k: int
) -> dict:
    """Change against the method's own original on the reference users it re-fitted (for a
    sharded method: the shard-mates of the forgotten users), the collateral cost of the re-fit."""
    from llmrec.evaluation.bias import per_user_deltas

    touched = (
        np.ones(len(after.forgotten_users), bool) if o.touched_users is None else o.touched_users
    )
    group = users[touched[users] & ~after.forgotten_users[users]]
    d = per_user_deltas(pu, orig, group, k)
    n = len(d["users"])
    return {
        "n_users": n,
        "divergence": float(np.mean(d["divergence"])) if n else float("nan"),
        "delta_ndcg": float(np.mean(d["delta_ndcg"])) if n else float("nan"),
    }


def _completeness(ctx: Context, o: MethodOutput) -> dict:
    from llmrec.privacy.membership import membership_inference, pair_ranks, rank_summary

    ds = ctx.ws.dataset
    fu, fi = ctx.task.forget
    out: dict = {"exact": o.exact}
    if len(fu) == 0:
        return out
    tr = ctx.task.train
    ranks = pair_ranks(o.score_fn, ds.n_items, fu, fi, exclude_users=tr[0], exclude_items=tr[1])
    out["forgotten_rank"] = rank_summary(ranks, ds.n_items)
    if o.family == "embedding":
        mia = membership_inference(
            o.score_fn, ds.n_items, fu, fi, tr[0], tr[1], np.unique(ds.pair_keys), seed=ctx.seed
        )
        out["mia_auc"] = float(mia.auc)
    return out


def _leakage(ctx: Context, emb: np.ndarray, attributes: Sequence[str], seed: int) -> dict:
    from llmrec.privacy.attributes import attribute_inference

    res = attribute_inference(emb, ctx.ws.dataset, attributes=list(attributes), seed=seed)
    return res


def _check_overrides(base: str, overrides: dict) -> None:
    """Reject an unknown or invalid base-model hyper-parameter before anything runs."""
    from llmrec.models import build_model

    try:
        build_model(base, 1, 1, **overrides)
    except (TypeError, ValueError) as exc:
        raise LlmrecError(f"--set for {base}: {exc}") from None


def run_compare(
    ws: Workspace,
    scenarios: Sequence[str],
    methods: Sequence[str],
    base: str = "bpr",
    seeds: Sequence[int] = (2020,),
    k_neighbours: int = 10,
    k: int = 10,
    log: Callable[[str], None] = lambda s: None,
    name: str = "compare",
    completeness: bool = True,
    model_overrides: dict | None = None,
    verify_exact: bool = True,
    fairness_ndcg: str = "recbole",
    candidate_source: str = "ease",
    keep_workspaces: bool = False,
    eval_users: int | None = None,
    llm_base: str | None = None,
) -> dict:
    """Run every scenario × seed × applicable method; write the report into a new run folder.

    The LLM path's scratch workspaces (they hold user data) are deleted at the end, also when
    the run fails; ``keep_workspaces`` keeps them and registers them with ``ws``
    (:meth:`~llmrec.workspace.Workspace.keep_workspaces`), so ``forget`` and ``audit`` cover them.

    ``model_overrides``: base-model hyper-parameters (``--set``), used by the original and so by
    every method built from it; ``verify_exact=False`` skips the LLM path's from-scratch rebuild
    (its bias against its own gold is then not reported); ``fairness_ndcg``: ``recbole`` or
    ``cure`` (CURE4Rec's normalisation) for A-IGF and shardGF; ``candidate_source``: the LLM
    path's candidate list (:mod:`retrieval.hybrid`); ``eval_users``: score a seeded sample of
    that many users (:func:`sample_users`); ``llm_base``: the LLM path's base model, ``None``
    the toolkit-built default (:func:`~llmrec.experiments.compare.llm.resolve_llm_base`)."""
    from llmrec.evaluation.report import write_report

    if fairness_ndcg not in ("recbole", "cure"):
        raise LlmrecError(f"fairness NDCG must be 'recbole' or 'cure', got {fairness_ndcg!r}")
    _check_overrides(base, model_overrides or {})
    if eval_users is not None and eval_users < 1:
        raise LlmrecError(f"--eval-users must be at least 1, got {eval_users}")
    if llm_base is not None:
        check_llm_base(llm_base)
    parsed = [Scenario.parse(s) for s in scenarios]
    plan, skipped = {}, {}
    for sc in parsed:
        reasons = {} if sc.kind == "file" else {m: skip_reason(m, sc.kind) for m in methods}
        ms = [m for m in methods if reasons.get(m) is None]
        skipped[sc.spec] = {m: r for m, r in reasons.items() if r is not None}
        if not ms:
            raise LlmrecError(
                f"none of the methods {', '.join(methods)} handles scenario {sc.spec!r}"
            )
        plan[sc.spec] = ms
    config = {
        "command": name,
        "scenarios": list(scenarios),
        "methods": list(methods),
        "plan": plan,
        "skipped": skipped,
        "base": base,
        "seeds": list(seeds),
        "k_neighbours": k_neighbours,
        "k": k,
        "model_overrides": model_overrides or {},
        "verify_exact": verify_exact,
        "fairness_ndcg": fairness_ndcg,
        "candidate_source": candidate_source,
        "keep_workspaces": keep_workspaces,
        "eval_users": eval_users,
        "llm_base": llm_base,
        # the version the per-user rows reflect: the runs forget stage scrubs the rows of
        # users who lose data after it
        "ledger_version": ws.view().version,
        "retrain_tolerance": RETRAIN_TOLERANCE,
        "dataset": ws.dataset.name,
        "split": ws.split.config(),
    }
    run_dir = ws.new_run(name, config)
    t0 = time.perf_counter()
    by_scenario = {}
    try:
        for sc in parsed:
            log(f"scenario {sc.spec}: methods {', '.join(plan[sc.spec])}")
            for m, why in skipped[sc.spec].items():
                log(f"scenario {sc.spec}: {m} skipped: {why}")
            by_scenario[sc.spec] = [
                run_seed(
                    ws,
                    sc,
                    plan[sc.spec],
                    base,
                    seed,
                    run_dir,
                    k_neighbours,
                    k,
                    log,
                    completeness,
                    model_overrides,
                    verify_exact,
                    fairness_ndcg,
                    candidate_source,
                    eval_users=eval_users,
                    llm_base=llm_base,
                )
                for seed in seeds
            ]
    finally:
        from llmrec.llm.backends.memo import clear_memo

        clear_memo()  # served answers are user data: none outlives the run
        _close_scratch(ws, run_dir, keep_workspaces)
    config["total_seconds"] = time.perf_counter() - t0
    paths = write_report(by_scenario, run_dir, config)
    return {"run_dir": str(run_dir), **paths, "config": config, "scenarios": by_scenario}


def _close_scratch(ws: Workspace, run_dir: Path, keep: bool) -> None:
    """Delete the run's scratch workspaces, or register the kept ones with ``ws``."""
    scratch = scratch_dir(run_dir)
    if not scratch.is_dir():
        return
    if not keep:
        shutil.rmtree(scratch)
        return
    subs = sorted(p.parent for p in scratch.glob("*/workspace.json"))
    if subs:
        ws.keep_workspaces(subs)
