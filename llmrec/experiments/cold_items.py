"""The cold-item scenario ``cold-items:P``: what text can recommend that interactions cannot.

The workspace's split moves P% of the catalogue, drawn seeded among the items with at most the
median number of interactions, out of TRAIN and VALID into TEST
(:func:`llmrec.data.split.with_cold_items`): no artifact sees an interaction of them, the
collaborative generator scores them 0. Every served user with a test pair is ranked by

* ``ease`` -- the co-occurrence generator's order;
* ``text`` -- the FAISS text neighbours of the user's retained history alone;
* ``hybrid`` -- the hybrid candidate list (:mod:`retrieval.hybrid`): EASE's head, the new items
  nearest in text in its tail -- the order the LLM re-ranks, and its control;
* ``cragru-zeroshot`` / ``cragru`` -- the LLM path over the hybrid list: the base LM alone and
  the per-shard adapters, each blended with the list's order by one weight chosen on VALID (no
  cold item is in VALID: TEST is never tuned on).

Recall@10 and NDCG@10 are reported on the cold items' test pairs (a user's other test items
masked, neither hits nor misses) and on all other test pairs, with paired per-user tests: the LLM
path against EASE and text alone on the cold pairs, against the hybrid order on the others.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmrec.data.parts import RetainedData
from llmrec.data.split import select_cold_items
from llmrec.errors import LlmrecError
from llmrec.evaluation.paired import paired_difference
from llmrec.experiments.cragru_scenario import (
    ScenarioConfig,
    _build_missing,
    _Clock,
    _score_fn,
    valid_blended,
)
from llmrec.io import atomic_write_json
from llmrec.serving.cragru import BLEND_GRID
from llmrec.workspace import DEFAULT_SPLIT, Workspace

_SPEC = re.compile(r"^cold-items:(\d+(?:\.\d+)?)%?$")
#: NDCG@10 on the other pairs may differ from the candidate order by at most this much
OTHER_TOLERANCE = 0.005


def parse_spec(spec: str) -> float:
    """The percentage of ``cold-items:P`` (LlmrecError otherwise)."""
    m = _SPEC.match(spec.strip())
    if not m or not 0 < float(m.group(1)) <= 100:
        raise LlmrecError(f"scenario {spec!r}: expected cold-items:P with P in (0, 100]")
    return float(m.group(1))


def cold_split(percent: float, seed: int = 2020) -> dict:
    """The workspace split of the scenario: the default random split, ``percent`` % cold."""
    return {**DEFAULT_SPLIT, "seed": int(seed), "cold_items": float(percent)}


@dataclass
class ColdItemsConfig:
    """The scenario's settings (the LLM path's as in ``scripts/run_cragru.py``)."""

    percent: float = 10.0
    seed: int = 2020
    n_shards: int = 4
    recipe: str = "quality"
    epochs: int | None = None
    strategy: str = "preference"
    methods: tuple[str, ...] = ("cragru-zeroshot", "cragru")
    blend_grid: tuple[float, ...] = field(default=BLEND_GRID)


def _groups(data: RetainedData, cold: np.ndarray) -> dict[str, RetainedData]:
    """The data evaluated on the cold items' test pairs and on all other test pairs (the other
    group's test pairs join VALID, which TEST masks: neither hits nor misses)."""
    tu, ti = data.test
    out = {}
    for name, mask in (("cold", np.isin(ti, cold)), ("other", ~np.isin(ti, cold))):
        valid = (
            np.concatenate([data.valid[0], tu[~mask]]),
            np.concatenate([data.valid[1], ti[~mask]]),
        )
        out[name] = RetainedData(data.view, data.train, valid, (tu[mask], ti[mask]))
    return out


def run_cold_items(
    ws: Workspace,
    cfg: ColdItemsConfig | None = None,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Build what the workspace lacks (base LM, retrieval store, adapters), rank every served
    user with a test pair by each method and compare them on the cold and the other pairs.
    Writes ``WS/runs/cold-items-TIME/`` and returns the results."""
    from llmrec.evaluation import evaluate_model
    from llmrec.llm.adapters import load_config
    from llmrec.models.training import retained_data
    from llmrec.serving.cragru import CragruOptions, CragruPipeline, default_lm_dir
    from retrieval.store import RetrievalStore

    cfg = cfg or ColdItemsConfig()
    if ws.split.cold_items != cfg.percent:
        raise LlmrecError(
            f"workspace {ws.root} has {ws.split.cold_items:g}% cold items, not {cfg.percent:g}%: "
            "run cold-items in a fresh --workspace"
        )
    clock = _Clock(progress or (lambda m: None))
    t_all = time.perf_counter()
    ds = ws.dataset
    scenario = ScenarioConfig(
        n_shards=cfg.n_shards,
        epochs=cfg.epochs,
        recipe=cfg.recipe,
        seed=cfg.seed,
        strategy=cfg.strategy,
        candidate_source="hybrid",
    )
    serve = _build_missing(ws, scenario, device, clock, progress is not None)
    data = retained_data(ws)
    cold = select_cold_items(ds, cfg.percent, ws.split.seed)
    users = np.unique(data.test[0])
    users = users[~data.view.forgotten_users[users]]
    store = RetrievalStore.load(ws)
    base = store.candidate_scores(users)
    n = serve.n_candidates
    rankings: dict[str, dict[int, np.ndarray]] = {}
    for source, length in (("ease", 50), ("text", 50), ("hybrid", n)):
        lists = store.candidates(users, length, source=source)
        rankings[source] = {int(u): row[row >= 0] for u, row in zip(users, lists)}
    blends: dict[str, dict] = {}
    tuned = load_config(ws)
    for method in cfg.methods:
        adapters = method == "cragru"
        opts = CragruOptions(
            model=None if adapters else str(default_lm_dir(ws)),
            adapters=adapters,
            device=device,
            strategy=cfg.strategy,
            template=tuned.template if adapters and tuned is not None else serve.template,
            history=serve.history,
            n_candidates=n,
            candidates="hybrid",
        )
        pipe = CragruPipeline(ws, opts)
        rankings[method], blends[method] = clock(
            method, lambda p=pipe: valid_blended(ws, p, users, data, base, cfg.blend_grid)
        )
    groups = _groups(data, cold)
    table: dict[str, dict[str, dict]] = {}
    per_user: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for method, rk in rankings.items():
        fn = _score_fn(rk, base, users, ds.n_items)
        for g, gdata in groups.items():
            res = evaluate_model(
                None, gdata, "test", users, ks=(10,), score_fn=fn, return_per_user=True
            )
            table.setdefault(method, {})[g] = {
                "recall@10": float(res["recall@10"]),
                "ndcg@10": float(res["ndcg@10"]),
                "n_users": int(res["n_users"]),
            }
            per_user.setdefault(method, {})[g] = {
                k: np.asarray(res["per_user"][k]) for k in ("users", "recall@10", "ndcg@10")
            }
    clock.timings["total"] = time.perf_counter() - t_all
    summary = {
        "scenario": f"cold-items:{cfg.percent:g}",
        "cold_items": int(len(cold)),
        "test_pairs": {
            "cold": int(len(groups["cold"].test[0])),
            "other": int(len(groups["other"].test[0])),
        },
        "n_candidates": int(n),
        "methods": table,
        "blend": blends,
        "paired": _paired(per_user, cfg.methods),
        "timings_s": clock.timings,
    }
    run = ws.new_run("cold-items", {"scenario": asdict(cfg), "device": device})
    atomic_write_json(run / "results.json", summary)
    summary["run_dir"] = str(run)
    return summary


def _paired(per_user: dict, methods: tuple[str, ...]) -> dict[str, dict]:
    """Per LLM method, on the same users: cold-pair Recall@10 against EASE and text alone, and
    other-pair NDCG@10 against the hybrid order (within :data:`OTHER_TOLERANCE`?)."""
    out = {}
    for m in methods:
        if m not in per_user:
            continue
        rows = {}
        for key, group, metric, other in (
            ("cold_recall_vs_ease", "cold", "recall@10", "ease"),
            ("cold_recall_vs_text", "cold", "recall@10", "text"),
            ("cold_recall_vs_hybrid", "cold", "recall@10", "hybrid"),
            ("other_ndcg_vs_hybrid", "other", "ndcg@10", "hybrid"),
        ):
            a, b = per_user[m][group], per_user[other][group]
            if not np.array_equal(a["users"], b["users"]):
                raise LlmrecError(f"{m} and {other} were evaluated on different users")
            rows[key] = paired_difference(a[metric], b[metric])
        rows["other_within_tolerance"] = bool(
            abs(rows["other_ndcg_vs_hybrid"]["mean_diff"]) <= OTHER_TOLERANCE
        )
        d = rows["cold_recall_vs_ease"]
        rows["cold_recall_above_ease_significant"] = bool(
            d["mean_diff"] > 0 and d["t_p_value"] < 0.05
        )
        out[m] = rows
    return out


def format_cold_items(summary: dict[str, Any]) -> str:
    """The scenario's table and its paired tests."""
    tp = summary["test_pairs"]
    lines = [
        f"{summary['scenario']}: {summary['cold_items']} cold items, {tp['cold']} cold test pairs,"
        f" {tp['other']} other test pairs; LLM over {summary['n_candidates']} hybrid candidates",
        f"{'method':16s} {'cold R@10':>9s} {'cold N@10':>9s} {'users':>5s} "
        f"{'other R@10':>10s} {'other N@10':>10s} {'users':>5s}",
    ]
    for m, g in summary["methods"].items():
        c, o = g["cold"], g["other"]
        lines.append(
            f"{m:16s} {c['recall@10']:9.4f} {c['ndcg@10']:9.4f} {c['n_users']:5d} "
            f"{o['recall@10']:10.4f} {o['ndcg@10']:10.4f} {o['n_users']:5d}"
        )
    for m, rows in summary["paired"].items():
        for key, label in (
            ("cold_recall_vs_ease", "cold Recall@10 - EASE"),
            ("cold_recall_vs_text", "cold Recall@10 - text alone"),
            ("cold_recall_vs_hybrid", "cold Recall@10 - hybrid order"),
            ("other_ndcg_vs_hybrid", "other NDCG@10 - hybrid order"),
        ):
            d = rows[key]
            lines.append(
                f"  {m} {label}: {d['mean_diff']:+.4f} +- {d['std_err']:.4f} (s.e., "
                f"{d['n_users']} users; t p={d['t_p_value']:.3g}, Wilcoxon "
                f"p={d['wilcoxon_p_value']:.3g}; wins/losses/ties "
                f"{d['wins']}/{d['losses']}/{d['ties']})"
            )
    return "\n".join(lines)
