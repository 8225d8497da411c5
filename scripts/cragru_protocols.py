#!/usr/bin/env python
"""CRAGRU under the toolkit's leak-free protocol and under the paper's, side by side.

One run builds two workspaces under ``--root`` (``toolkit/`` and ``paper/``), forgets the same
random 10% of users in each (train interactions / all but one interaction), and prints HR@10 and
NDCG@10 of the candidate orders of ``<model>-original`` (includes forgotten data), ``<model>``
(retrained, exact) and ``ease``, of the LLM over each (``--llm``), of Retrain, and the paper's
Table II row; the leaky - exact differences come with paired t / Wilcoxon tests. See
docs/cragru_reference.md. Results: ROOT/toolkit/runs/cragru-protocols-TIME/results.json.

    python scripts/cragru_protocols.py --root ws-protocols            # candidates + Retrain
    python scripts/cragru_protocols.py --root ws-protocols2 --llm     # + the LLM rankings
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from llmrec.cli.help_format import HelpFormatter  # noqa: E402
from llmrec.errors import LlmrecError  # noqa: E402
from llmrec.experiments.cragru_paper import (  # noqa: E402
    ProtocolConfig,
    format_protocols,
    run_protocols,
)
from llmrec.io import to_json  # noqa: E402
from retrieval.strategies import ALL_STRATEGIES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The script's options; every option's help says its default."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--root", default="llmrec-protocols", help="fresh folder for both workspaces")
    p.add_argument("--dataset", default=None, help="atomic dataset name (default: ml-100k)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding NAME.inter/.user/.item (default: recbole's examples)",
    )
    p.add_argument(
        "--model",
        choices=["bpr", "lightgcn"],
        default="bpr",
        help="CF model of the candidate sources",
    )
    p.add_argument("--fraction", type=float, default=0.1, help="share of users to forget")
    p.add_argument("--candidates", type=int, default=50, help="candidates per user")
    p.add_argument("--list-len", type=int, default=20, help="length of the ranked list")
    p.add_argument("--history", type=int, default=100, help="history budget H")
    p.add_argument("--clusters", type=int, default=5, help="item clusters k")
    p.add_argument(
        "--strategy",
        choices=ALL_STRATEGIES,
        default="dp",
        help="history-selection strategy (dp: per-cluster shares fitted on VALID)",
    )
    p.add_argument(
        "--encoder",
        choices=["text", "cf"],
        default="text",
        help="item encoder of the retrieval store",
    )
    p.add_argument("--llm", action="store_true", help="also rank with the catalogue LM")
    p.add_argument(
        "--mode",
        choices=["likelihood", "json", "constrained"],
        default="likelihood",
        help="LM ranking mode (with --llm)",
    )
    p.add_argument("--llm-users", type=int, default=None, help="cap on LLM-ranked users")
    p.add_argument("--lm", default=None, help="LM folder (default: the workspace's built LM)")
    p.add_argument(
        "--lm-init",
        choices=["scratch", "minilm"],
        default="scratch",
        help="starting point of the LM built without --lm (scratch: 512 positions, fits the "
        "paper's 50 candidates; minilm: 232 positions, needs --candidates 20)",
    )
    p.add_argument(
        "--blend",
        type=float,
        default=None,
        help="weight of the candidate-rank prior in the LM's score (default: tuned on VALID; "
        "0: the pure LM ranking)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="users per LM batch")
    p.add_argument("--seed", type=int, default=2020, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = ProtocolConfig(
        fraction=args.fraction,
        model=args.model,
        n_candidates=args.candidates,
        list_len=args.list_len,
        H=args.history,
        k=args.clusters,
        strategy=args.strategy,
        llm=args.llm,
        mode=args.mode,
        llm_users=args.llm_users,
        batch_size=args.batch_size,
        seed=args.seed,
        encoder=args.encoder,
        device=args.device,
        lm=args.lm,
        lm_init=args.lm_init,
        blend=args.blend,
    )
    say = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        res = run_protocols(args.root, cfg, args.dataset, args.data_dir, progress=say)
    except (LlmrecError, ValueError) as exc:
        print(f"cragru_protocols: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    print(to_json(res) if args.json else format_protocols(res))
    if not args.json:
        print(f"results in {res['run_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
