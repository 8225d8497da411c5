"""A real instruct LLM zero-shot against the default path, on one seeded user sample.

``scripts/run_cragru.py --base smollm2 --users N``: SmolLM2-135M-Instruct (``build-lm --init
smollm2``, no adapters, as CRAGRU runs its LLM) ranks the same retrieved candidates as the
default MiniLM path with its shard adapters, for the same ``N`` users drawn with the seed among
the served users with a test item. One paired table (:func:`format_table`): the candidate
generator's order; SmolLM2 in json mode (the paper's: the model writes the JSON, its parse and
fallback rate reported), likelihood and verbalizer modes; the MiniLM default (likelihood with its
served blend); BPR-MF retrained on the retained data -- NDCG@10 / Recall@10 on the RecBole
protocol restricted to the candidate list (as :mod:`llmrec.experiments.cragru_scenario`), the
paired per-user difference to the candidates, and the wall and CPU seconds of every phase.
``runs/cragru-sample-TIME/`` holds the results and every ranking with the model's answer text.
Every served id is checked to be a non-forgotten candidate of its user.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.errors import ArtifactError
from llmrec.evaluation.paired import paired_difference
from llmrec.experiments.cragru_scenario import ScenarioConfig, _build_missing, _score_fn
from llmrec.io import atomic_write_json, atomic_write_text
from llmrec.serving.cragru import CragruOptions, CragruPipeline
from llmrec.workspace import Workspace

SMOLLM2_DIR = ("artifacts", "lm-smollm2")
SMOLLM2_MODES = ("json", "likelihood", "verbalizer")


@dataclass
class SampleConfig:
    """The sample run (defaults: ``scripts/run_cragru.py --base smollm2``)."""

    users: int = 12
    modes: tuple[str, ...] = SMOLLM2_MODES
    strategy: str = "preference"
    encoder: str = "text"
    n_shards: int = 4
    recipe: str = "fast"  # the MiniLM default's adapter recipe (llmrec.llm.recipe.RECIPES)
    seed: int = 2020
    ks: tuple[int, ...] = (10,)
    #: also SmolLM2 + LoRA: an adapter tuned on one user shard of ``lora_shards`` (its users'
    #: retained train data), the sample drawn among that shard's users (0: no LoRA row)
    lora_shards: int = 0


class PhaseClock:
    """Wall and process-CPU seconds of each named phase, in the order they ran."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say or (lambda m: None)
        self.phases: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.phases[name] = {
            "wall_s": time.perf_counter() - w0,
            "cpu_s": time.process_time() - c0,
        }
        self.say(f"{name}: {self.phases[name]['wall_s']:.1f}s wall")
        return out


def sample_users(data: Any, n: int, seed: int, within: np.ndarray | None = None) -> np.ndarray:
    """``n`` served users with a retained test item (and in the bool mask ``within``), drawn
    with ``seed`` (sorted)."""
    has_test = np.zeros(len(data.view.forgotten_users), bool)
    has_test[data.test[0]] = True
    ok = has_test & ~data.view.forgotten_users
    eligible = np.flatnonzero(ok if within is None else ok & within)
    if n > len(eligible):
        where = "served users" if within is None else "served users of the LoRA shard"
        raise ArtifactError(f"--users {n}: only {len(eligible)} {where} have a test item")
    return np.sort(np.random.default_rng(seed).choice(eligible, n, replace=False))


def run_sample(
    ws: Workspace,
    cfg: SampleConfig | None = None,
    progress: Callable[[str], None] | None = None,
    device: str = "cpu",
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """Build what is missing, serve the sample with every method, evaluate, write
    ``runs/cragru-sample-TIME/`` and return the summary. ``base_dir``: a SmolLM2 conversion
    to serve (default: the workspace's ``artifacts/lm-smollm2``, converted when absent)."""
    from llmrec.evaluation import evaluate_model
    from llmrec.llm.smollm2 import convert_smollm2
    from llmrec.models.training import retained_data, train_model

    cfg = cfg or SampleConfig()
    clock = PhaseClock(progress)
    t_all, c_all = time.perf_counter(), time.process_time()
    if base_dir is None:
        base_dir = ws.root.joinpath(*SMOLLM2_DIR)
        clock("convert_smollm2", lambda: convert_smollm2(base_dir))
    base_dir = Path(base_dir)
    scen = ScenarioConfig(
        strategy=cfg.strategy,
        encoder=cfg.encoder,
        n_shards=cfg.n_shards,
        recipe=cfg.recipe,
        seed=cfg.seed,
    )
    clock("minilm_default_build", lambda: _build_missing(ws, scen, device, _quiet(), False))
    data = retained_data(ws)
    shard, within = None, None
    if cfg.lora_shards:
        from llmrec.llm.shards import shard_of

        assignment = shard_of(ws.dataset.user_tokens, cfg.lora_shards, cfg.seed)
        shard = int(assignment[sample_users(data, 1, cfg.seed)[0]])
        within = assignment == shard
    users = sample_users(data, cfg.users, cfg.seed, within)
    small = clock(
        "load_smollm2",
        lambda: CragruPipeline(
            ws, CragruOptions(model=str(base_dir), adapters=False, strategy=cfg.strategy)
        ),
    )
    ctxs = clock("retrieve", lambda: [small.context(int(u)) for u in users])
    rankings: dict[str, list] = {}
    for mode in cfg.modes:
        rankings[f"smollm2_{mode}"] = clock(
            f"smollm2_{mode}",
            lambda m=mode: small.recommend(users, m, contexts=ctxs, blend=0.0),
        )
    if shard is not None:
        rankings["smollm2_lora"] = _lora_row(ws, base_dir, cfg, shard, users, ctxs, clock)
    default = clock("load_minilm_default", lambda: CragruPipeline(ws, CragruOptions(device=device)))
    rankings["minilm_default"] = clock(
        "minilm_default", lambda: default.recommend(users, "likelihood", contexts=ctxs)
    )
    bpr = clock("bpr_retrain", lambda: train_model(ws, "bpr", seed=cfg.seed, data=data))
    base = default.store.candidate_scores(users)
    methods = {"candidates": {int(c.user): c.candidates for c in ctxs}}
    methods.update({k: {r.user: r.items for r in rs} for k, rs in rankings.items()})

    def per_user(name: str) -> dict[str, Any]:
        if name == "bpr_retrained":
            return evaluate_model(bpr, data, "test", users, ks=cfg.ks, return_per_user=True)
        fn = _score_fn(methods[name], base, users, ws.dataset.n_items)
        return evaluate_model(
            None, data, "test", users, ks=cfg.ks, score_fn=fn, return_per_user=True
        )

    results = clock("evaluate", lambda: {m: per_user(m) for m in [*methods, "bpr_retrained"]})
    ref = np.asarray(results["candidates"]["per_user"]["ndcg@10"])
    table = {}
    for name, res in results.items():
        ndcg = np.asarray(res["per_user"]["ndcg@10"])
        row = {
            "ndcg@10": float(res["ndcg@10"]),
            "recall@10": float(res["recall@10"]),
            "vs_candidates": paired_difference(ndcg, ref) if name != "candidates" else None,
        }
        if name in rankings:
            row["parse"] = _parse(rankings[name])
        table[name] = row
    summary = {
        "config": asdict(cfg),
        "base": str(base_dir),
        "lora_shard": shard,
        "users": [str(ws.dataset.user_tokens[u]) for u in users],
        "n_users": int(len(users)),
        "n_evaluated": int(results["candidates"]["n_users"]),
        "ledger_version": int(data.version),
        "served_outside": _served_outside(rankings, ctxs, data.view.forgotten_items),
        "table": table,
        "phases": clock.phases,
        "total": {"wall_s": time.perf_counter() - t_all, "cpu_s": time.process_time() - c_all},
    }
    run = ws.new_run("cragru-sample", {"sample": asdict(cfg), "device": device})
    atomic_write_json(run / "results.json", summary)
    tokens = ws.dataset.item_tokens
    lines = [
        json.dumps(
            {"method": name, **r.to_dict(tokens), "user": str(ws.dataset.user_tokens[r.user])}
        )
        for name, rs in rankings.items()
        for r in rs
    ]
    atomic_write_text(run / "rankings.jsonl", "\n".join(lines) + "\n")
    summary["run_dir"] = str(run)
    return summary


def _lora_row(ws, base_dir, cfg: SampleConfig, shard: int, users, ctxs, clock) -> list:
    """SmolLM2 + LoRA: the recipe's adapter tuned on ``shard`` (its users' retained train data
    at the ledger's newest version, as ``llmrec adapters tune`` tunes a shard) into a temporary
    folder outside the workspace, the sample's contexts ranked in likelihood mode under it
    (through the serving check: nothing forgotten or outside the candidates), and the folder
    deleted: it holds user data and is no workspace artifact, so it must not outlive the run."""
    import shutil
    import tempfile

    from llmrec.llm.adapters import AdapterConfig, shard_dir, tune_adapters
    from llmrec.llm.backends import BackendSpec, checked_rank, create_backend
    from llmrec.llm.catalog import Catalog
    from llmrec.llm.recipe import example_settings, lora_settings, serving

    recipe = serving(base_dir)
    acfg = AdapterConfig(
        base=str(base_dir.resolve()),
        n_shards=cfg.lora_shards,
        seed=cfg.seed,
        template=recipe.template,
        answer_items=recipe.answer_items,
        lora=lora_settings(base_dir),
        examples=example_settings(base_dir),
    )
    tmp = Path(tempfile.mkdtemp(prefix="llmrec-sample-lora-"))
    try:
        clock(
            "smollm2_lora_tune",
            lambda: tune_adapters(ws, acfg, shards=[shard], root=tmp, register=False),
        )
        name = f"shard-{shard:03d}"
        backend = clock(
            "load_smollm2_lora",
            lambda: create_backend(
                "hf",
                BackendSpec(
                    str(base_dir),
                    Catalog.from_dataset(ws.dataset),
                    adapters={name: str(shard_dir(tmp, shard))},
                    template=recipe.template,
                ),
            ),
        )
        forgotten = ws.view().forgotten_items
        return clock(
            "smollm2_lora",
            lambda: checked_rank(backend, ctxs, "likelihood", forgotten=forgotten, adapter=name),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quiet():
    """The scenario builder's clock, silenced (the phase clock times the whole build)."""
    from llmrec.experiments.cragru_scenario import _Clock

    return _Clock(lambda m: None)


def _parse(rs: Sequence[Any]) -> dict[str, Any] | None:
    """Fallback rate and dropped entries of a generated (json) ranking; ``None`` otherwise."""
    reports = [r.report for r in rs if r.report is not None]
    if not reports:
        return None
    return {
        "users": len(rs),
        "fallbacks": int(sum(r.fallback for r in rs)),
        "fallback_rate": float(np.mean([r.fallback for r in rs])),
        "valid_entries": int(sum(p.valid for p in reports)),
        "dropped": {
            k: int(sum(getattr(p, k) for p in reports))
            for k in ("unknown", "not_candidate", "duplicate", "forgotten")
        },
    }


def _served_outside(rankings: dict[str, list], ctxs: Sequence[Any], forgotten: np.ndarray):
    """Served ids that are not a non-forgotten candidate of their user (must be 0)."""
    cands = {int(c.user): set(c.candidates.tolist()) for c in ctxs}
    bad = 0
    for rs in rankings.values():
        for r in rs:
            bad += sum(int(i) not in cands[r.user] or bool(forgotten[int(i)]) for i in r.items)
    return int(bad)


def format_table(summary: dict[str, Any]) -> str:
    """The paired table: quality, difference to the candidates, parse and fallback rates."""
    rows = [
        f"{summary['n_users']} users (seed {summary['config']['seed']}), "
        f"{summary['n_evaluated']} with a test item; ledger v{summary['ledger_version']}; "
        f"served ids outside the non-forgotten candidates: {summary['served_outside']}",
        f"{'method':<22s} {'NDCG@10':>8s} {'Recall@10':>9s} {'d NDCG vs cand.':>16s} "
        f"{'t p':>6s} {'W p':>6s}  json parse",
    ]
    for name, row in summary["table"].items():
        d = row["vs_candidates"]
        diff = (
            f"{d['mean_diff']:+16.4f} {d['t_p_value']:6.3f} {d['wilcoxon_p_value']:6.3f}"
            if d
            else f"{'':>16s} {'':>6s} {'':>6s}"
        )
        p = row.get("parse")
        parse = (
            f"fallback {p['fallbacks']}/{p['users']} ({p['fallback_rate']:.0%}), "
            f"{p['valid_entries']} valid entries"
            if p
            else ""
        )
        rows.append(f"{name:<22s} {row['ndcg@10']:8.4f} {row['recall@10']:9.4f} {diff}  {parse}")
    rows.append(f"{'phase':<22s} {'wall s':>8s} {'CPU s':>9s}")
    for name, ph in [*summary["phases"].items(), ("total", summary["total"])]:
        rows.append(f"{name:<22s} {ph['wall_s']:8.1f} {ph['cpu_s']:9.1f}")
    return "\n".join(rows)
