"""The comparison harness: one forget request through every method, measured the same way.

For each seed: train the base model on the data before the request (the *original*), build the
request from the scenario, run every method on it, and measure per method

* utility (RecBole full ranking) for all retained users, forget users (on their original test
  pairs: lower is more forgotten, compare with retrain), neighbours and controls;
* completeness: forgotten-pair rank and membership-inference AUC (embedding methods), the
  exact-equivalence status (LLM path);
* propagation bias against the retrained gold and against the original (DESIGN §5);
* attribute leakage when attributes are forgotten;
* wall seconds, peak memory and the speed-up over retraining in the same run.

Methods are looked up in :data:`METHOD_RUNNERS` by name; a runner returns a :class:`MethodOutput`
whose ``score_fn`` ranks all items for a batch of users.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmrec.data.requests import (
    ForgetRequest,
    interactions_request,
    load_requests,
    select_interactions,
    select_users,
    user_interactions_request,
)
from llmrec.data.retained import RetainedView
from llmrec.data.split import TEST, TRAIN, VALID
from llmrec.errors import LlmrecError
from llmrec.evaluation import evaluate_ranking
from llmrec.evaluation.bias import (
    PerUser,
    interaction_matrix,
    neighbours_and_controls,
    propagation_bias,
)
from llmrec.workspace import Workspace

_SCENARIO = re.compile(r"^(random|core|edge):(\d+(?:\.\d+)?)%(users|interactions)$")


@dataclass(frozen=True)
class Scenario:
    """A forget scenario: ``random:5%users``, ``core:10%interactions``, ``attribute:gender,age``
    or the path of a request file."""

    spec: str
    kind: str
    how: str = ""
    fraction: float = 0.0
    attributes: tuple[str, ...] = ()
    path: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        m = _SCENARIO.match(spec.strip())
        if m:
            frac = float(m.group(2)) / 100
            if not 0 < frac <= 1:
                raise LlmrecError(f"scenario {spec!r}: percentage must be in (0, 100]")
            return cls(spec, m.group(3), m.group(1), frac)
        if spec.startswith("attribute:"):
            attrs = tuple(a.strip() for a in spec.split(":", 1)[1].split(",") if a.strip())
            if not attrs:
                raise LlmrecError(f"scenario {spec!r} names no attribute")
            return cls(spec, "attribute", attributes=attrs)
        if Path(spec).is_file():
            return cls(spec, "file", path=spec)
        raise LlmrecError(
            f"unknown scenario {spec!r}: expected random|core|edge:N%users, random|core|edge:N%interactions, "
            "attribute:a,b or a request file"
        )

    def build(
        self, ws: Workspace, view: RetainedView, seed: int
    ) -> tuple[list[ForgetRequest], np.ndarray]:
        """The requests and the forgotten users (owners of the forgotten data)."""
        ds = ws.dataset
        train = ws.split.mask(TRAIN, view.keep)
        if self.kind == "users":
            users = select_users(ds, self.fraction, self.how, seed, mask=train)
            return [user_interactions_request(ds, users)], users
        if self.kind == "interactions":
            rows = select_interactions(ds, self.fraction, self.how, seed, mask=train)
            return [interactions_request(ds, rows)], np.unique(ds.inter_user[rows])
        if self.kind == "attribute":
            req = ForgetRequest.from_dict(
                {"kind": "attribute", "attributes": list(self.attributes)}
            )
            req.validate(ds)
            return [req], np.zeros(0, dtype=np.int64)
        reqs = load_requests(self.path)
        for r in reqs:
            r.validate(ds)
        after = view.copy()
        for r in reqs:
            after.apply(r)
        gone = np.flatnonzero(view.keep & ~after.keep)
        return reqs, np.unique(ds.inter_user[gone])


@dataclass
class Context:
    """Everything a method runner may use for one seed of one scenario."""

    ws: Workspace
    base: str
    seed: int
    requests: list[ForgetRequest]
    before: RetainedView
    after: RetainedView
    original: object  # the CF model trained before the request
    task: object  # llmrec.unlearning.base.UnlearnTask
    run_dir: Path
    cache: dict = field(default_factory=dict)


@dataclass
class MethodOutput:
    """A method's result: how to score users, and what it cost."""

    name: str
    family: str  # "embedding" or "llm"
    seconds: float
    peak_memory_mb: float
    score_fn: Callable[[np.ndarray], object]
    user_embeddings: np.ndarray | None = None
    model: object | None = None
    exact: bool | None = None
    info: dict = field(default_factory=dict)


# name -> "module:function(ctx) -> MethodOutput"
METHOD_RUNNERS: dict[str, str] = {
    "retrain": "llmrec.pipelines.compare_methods:run_embedding",
    "finetune": "llmrec.pipelines.compare_methods:run_embedding",
    "alteraser": "llmrec.pipelines.compare_methods:run_embedding",
    "reverse-bpr": "llmrec.pipelines.compare_methods:run_embedding",
    "lego": "llmrec.pipelines.compare_methods:run_embedding",
    "unlearnrec": "llmrec.pipelines.compare_methods:run_embedding",
    "sisa": "llmrec.pipelines.compare_methods:run_embedding",
    "receraser": "llmrec.pipelines.compare_methods:run_embedding",
    "cragru": "llmrec.pipelines.compare_methods:run_cragru",
}


def register_method(name: str, target: str) -> None:
    METHOD_RUNNERS[name] = target


def method_handles(name: str, kind: str) -> bool:
    """Whether method ``name`` can honour requests of scenario ``kind``."""
    if name not in METHOD_RUNNERS:
        raise LlmrecError(f"unknown method {name!r} (known: {', '.join(sorted(METHOD_RUNNERS))})")
    if METHOD_RUNNERS[name].endswith(":run_embedding"):
        from llmrec.pipelines.compare_methods import unlearner_classes

        cls = unlearner_classes().get(name)
        if cls is None:
            raise LlmrecError(f"method {name!r} is not available in llmrec.unlearning")
        req_kind = {
            "users": "interactions",
            "interactions": "interactions",
            "attribute": "attribute",
        }.get(kind)
        return req_kind is None or req_kind in cls.handles
    # the LLM path forgets attributes exactly by construction (profiles drop them); the
    # comparison measures it on interaction requests, where there is something to measure
    return kind != "attribute"


def _runner(name: str):
    if name not in METHOD_RUNNERS:
        raise LlmrecError(f"unknown method {name!r} (known: {', '.join(sorted(METHOD_RUNNERS))})")
    mod, _, fn = METHOD_RUNNERS[name].partition(":")
    return getattr(importlib.import_module(mod), fn)


def _pairs(ws: Workspace, keep: np.ndarray, part: int) -> tuple[np.ndarray, np.ndarray]:
    m = ws.split.mask(part, keep)
    return ws.dataset.inter_user[m], ws.dataset.inter_item[m]


def _evaluate(score_fn, ws: Workspace, keep: np.ndarray, users: np.ndarray, exclude_items, k: int):
    """Per-user test evaluation on the split part ``TEST`` of ``keep`` (train+valid masked)."""
    tr, va, te = (_pairs(ws, keep, p) for p in (TRAIN, VALID, TEST))
    res = evaluate_ranking(
        score_fn,
        ws.dataset.n_items,
        np.concatenate([tr[0], va[0]]),
        np.concatenate([tr[1], va[1]]),
        te[0],
        te[1],
        ks=(5, 10, 20),
        users=users,
        return_per_user=True,
        exclude_items=exclude_items,
    )
    return res


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
) -> dict:
    """All methods on one seed. Returns the per-method results (with per-user data)."""
    from llmrec.pipelines.cf import RetainedData, train_model
    from llmrec.unlearning.base import make_task

    ds = ws.dataset
    before = ws.view()
    requests, forget_users = scenario.build(ws, before, seed)
    task = make_task((ds, ws.split, before), requests)
    after = task.after
    t0 = time.perf_counter()
    original = train_model(
        ws,
        base,
        seed=seed,
        data=RetainedData(
            before, task.train_before, _pairs(ws, before.keep, VALID), _pairs(ws, before.keep, TEST)
        ),
    )
    original.ledger_version = before.version
    log(
        f"seed {seed}: original {base} trained in {time.perf_counter() - t0:.1f}s; {requests[0].describe()}"
    )
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
        {"verify_exact": verify_exact},
    )

    excl = after.forgotten_items if after.forgotten_items.any() else None
    alive = np.flatnonzero(~after.forgotten_users)
    te_after = _pairs(ws, after.keep, TEST)
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

    outputs: dict[str, MethodOutput] = {}
    attribute_only = scenario.kind == "attribute"
    order = [m for m in methods if m != "retrain"]
    if not attribute_only:
        order = ["retrain", *order]  # the gold, always run first
    for name in order:
        t = time.perf_counter()
        outputs[name] = _runner(name)(ctx, name)
        log(f"  {name}: {outputs[name].seconds:.2f}s (wall {time.perf_counter() - t:.1f}s)")

    eval_after = {
        n: _evaluate(o.score_fn, ws, after.keep, alive, excl, k) for n, o in outputs.items()
    }
    # the original model, on the same retained users, for the "versus original" bias
    eval_original = _evaluate(original.score, ws, after.keep, alive, excl, k)
    orig = PerUser.from_eval(eval_original, k)
    # an attribute request removes no interaction: retraining would reproduce the original
    gold = orig if attribute_only else PerUser.from_eval(eval_after["retrain"], k)
    retrain_seconds = float("nan") if attribute_only else outputs["retrain"].seconds

    results: dict[str, dict] = {}
    for name in [m for m in methods if m in outputs]:
        o = outputs[name]
        ev = eval_after[name]
        per = ev["per_user"]
        entry: dict = {
            "family": o.family,
            "seconds": o.seconds,
            "peak_memory_mb": o.peak_memory_mb,
            "speedup_vs_retrain": retrain_seconds / o.seconds if o.seconds > 0 else float("nan"),
            "utility": {
                "all": _summary(ev),
                "neighbours": _group_metrics(per, neighbours, k),
                "controls": _group_metrics(per, controls, k),
            },
            "info": o.info,
        }
        if len(forget_users):
            fe = _evaluate(o.score_fn, ws, before.keep, forget_users, excl, k)
            entry["utility"]["forget"] = _summary(fe)
        if len(neighbours):
            pu = PerUser.from_eval(ev, k)
            entry["bias"] = {
                "vs_gold": propagation_bias(pu, gold, neighbours, controls, k),
                "vs_original": propagation_bias(pu, orig, neighbours, controls, k),
            }
        entry["completeness"] = _completeness(ctx, o) if completeness else {"exact": o.exact}
        if scenario.kind == "attribute" and o.user_embeddings is not None:
            entry["attribute_leakage"] = _leakage(ctx, o.user_embeddings, scenario.attributes, seed)
        results[name] = entry
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
        "retrain_seconds": retrain_seconds,
        "methods": results,
    }


def _completeness(ctx: Context, o: MethodOutput) -> dict:
    from llmrec.audit.membership import membership_inference, pair_ranks, rank_summary

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
    from llmrec.audit.attributes import audit_attributes

    res = audit_attributes(emb, ctx.ws.dataset, attributes=list(attributes), seed=seed)
    return res


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
) -> dict:
    """Run every scenario × seed × applicable method; write the report into a new run folder."""
    from llmrec.evaluation.report import write_report

    parsed = [Scenario.parse(s) for s in scenarios]
    plan = {}
    for sc in parsed:
        ms = [m for m in methods if method_handles(m, sc.kind)]
        if sc.kind == "file":
            ms = list(methods)
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
        "base": base,
        "seeds": list(seeds),
        "k_neighbours": k_neighbours,
        "k": k,
        "model_overrides": model_overrides or {},
        "verify_exact": verify_exact,
        "dataset": ws.dataset.name,
        "split": ws.split.config(),
    }
    run_dir = ws.new_run(name, config)
    t0 = time.perf_counter()
    by_scenario = {}
    for sc in parsed:
        log(f"scenario {sc.spec}: methods {', '.join(plan[sc.spec])}")
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
            )
            for seed in seeds
        ]
    config["total_seconds"] = time.perf_counter() - t0
    paths = write_report(by_scenario, run_dir, config)
    return {"run_dir": str(run_dir), **paths, "config": config, "scenarios": by_scenario}
