"""``llmrec compare`` and ``llmrec bias``: the same forget request through every method."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmrec import progress
from llmrec.cli.common import (
    emit,
    methods_help,
    open_workspace,
    parse_overrides,
    positive_int,
)
from llmrec.errors import LlmrecError
from retrieval.hybrid import SOURCES

DEFAULT_METHODS = "retrain,finetune,alteraser,reverse-bpr,cragru,cragru-zeroshot,candidates,lego"


def _methods_epilog() -> str:
    """Every method ``--methods`` accepts (the LLM-path ones register with the harness)."""
    import llmrec.experiments.compare  # noqa: F401

    return methods_help()


def register(sub, common) -> None:
    for name, helptext in (
        (
            "compare",
            "run methods on the same forget scenario; write results, plots and report.html",
        ),
        ("bias", "propagation bias only (neighbours vs controls, vs retrain and vs original)"),
    ):
        p = sub.add_parser(
            name,
            parents=[common],
            help=helptext,
            epilog=_methods_epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--scenario",
            action="append",
            required=True,
            help="random|core|edge:N%%users, random|core|edge:N%%interactions, attribute:a,b, "
            "stream:N (N single-user requests one at a time) or a request file; repeat for several "
            "scenarios in one report",
        )
        p.add_argument(
            "--methods",
            default=DEFAULT_METHODS,
            help="comma-separated registered methods, listed below (default: %(default)s); "
            "methods that cannot honour a scenario's request kind are skipped for it",
        )
        p.add_argument("--base", choices=["bpr", "lightgcn"], default="bpr", help="CF base model")
        p.add_argument(
            "--seeds", type=positive_int, default=1, help="number of seeds (seed, seed+1, ...)"
        )
        p.add_argument(
            "--neighbours",
            type=positive_int,
            default=10,
            help="top-k similar users per forgotten user",
        )
        p.add_argument(
            "--k", type=positive_int, default=10, help="cut-off K of ΔNDCG@K and top-K divergence"
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="base-model hyper-parameter (JSON value), e.g. --set epochs=50",
        )
        p.add_argument(
            "--no-exact-check",
            action="store_true",
            help="skip the LLM path's from-scratch rebuild that verifies exact unlearning (it is "
            "also the LLM path's gold: without it, its bias against its gold is not reported)",
        )
        p.add_argument(
            "--fairness-ndcg",
            choices=["recbole", "cure"],
            default="recbole",
            help="NDCG of CURE4Rec's A-IGF and shardGF: RecBole's (IDCG over min(|test|, K)) or "
            "CURE4Rec's (IDCG over every test item)",
        )
        p.add_argument(
            "--source",
            choices=SOURCES,
            default="ease",
            help="the LLM path's candidate list: ease, text or hybrid (retrieval/hybrid.py) "
            "(default: %(default)s)",
        )
        p.add_argument(
            "--llm-base",
            metavar="NAME|DIR",
            help="the LLM path's base model: smollm2 (SmolLM2-135M-Instruct: the workspace's "
            "'build-lm --init smollm2', else converted once for the run) or a model folder "
            "(default: the toolkit-built base, 'llmrec build-lm')",
        )
        p.add_argument(
            "--eval-users",
            type=positive_int,
            metavar="N",
            help="score a seeded sample of N users (a quarter neighbours, a quarter controls, "
            "the rest other retained users), the same for every method, instead of every "
            "retained user: it bounds what a slow LLM serves (default: every user)",
        )
        p.add_argument(
            "--keep-workspaces",
            action="store_true",
            help="keep the LLM path's scratch workspaces (deleted at the end by default); kept "
            "ones hold user data, so they are registered and covered by forget and audit",
        )
        p.set_defaults(func=cmd_compare, harness=name)


def cmd_compare(args: argparse.Namespace) -> int:
    from llmrec.experiments.compare import run_compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise LlmrecError("--methods is empty")
    if args.seeds < 1:
        raise LlmrecError("--seeds must be at least 1")
    ws = open_workspace(args)
    if args.llm_base and "cragru" in methods:
        progress.say(
            f"note: cragru tunes a LoRA adapter per user shard on every user's data with "
            f"--llm-base {args.llm_base}, three times (original, after, gold): a GPU job; on a "
            "CPU, compare cragru-zeroshot and candidates with --eval-users"
        )
    res = run_compare(
        ws,
        args.scenario,
        methods,
        base=args.base,
        seeds=[args.seed + i for i in range(args.seeds)],
        k_neighbours=args.neighbours,
        k=args.k,
        log=progress.say,
        name=args.harness,
        completeness=args.harness == "compare",
        model_overrides=parse_overrides(args.set),
        verify_exact=not args.no_exact_check,
        fairness_ndcg=args.fairness_ndcg,
        candidate_source=args.source,
        keep_workspaces=args.keep_workspaces,
        eval_users=args.eval_users,
        llm_base=args.llm_base,
    )
    md = Path(res["run_dir"]) / "results.md"  # as the harness wrote it (cwd-relative or absolute)
    text = md.read_text() if md.is_file() else ""
    text += f"\nreport: {res['report']}\nresults: {res['results']}"
    summary = {k: res[k] for k in ("run_dir", "report", "results", "images")}
    summary["aggregate"] = {s: _aggregate(res, s) for s in res["scenarios"]}
    summary["skipped"] = res["config"].get("skipped", {})
    emit(args, summary, text)
    return 0


def _aggregate(res: dict, spec: str) -> dict:
    from llmrec.evaluation.report import aggregate
    from llmrec.evaluation.stream_report import stream_table

    seeds = res["scenarios"][spec]
    return stream_table(seeds) if seeds and seeds[0].get("stream") else aggregate(seeds)
