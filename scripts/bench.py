"""Benchmarks of the toolkit, one subcommand each; every result is one JSON line on stdout.

    python scripts/bench.py train [--seeds 2020 2021 2022] [--models bpr lightgcn]

``train``: the CF base models with their default recipes on ml-100k (RecBole's RS 8:1:1 split,
full ranking), training seconds beside RecBole 1.2.1's anchors; see :mod:`benchmarks.train`.

``retrieval-forget``, ``candidates``, ``index-scale``: the retrieval layer's benchmarks (forget
latency vs rebuild, candidate quality vs BPR-MF, FAISS index types at 10^6 vectors); see
:mod:`benchmarks.retrieval_layer`.

``llm``: users per second of the CRAGRU serving backend for each mode (likelihood, json, constrained)
with the default model on CPU; see :mod:`benchmarks.generation`.

``unlearn``: the embedding unlearners on ml-100k for BPR-MF and LightGCN: AltEraser, FineTune
and reverse BPR against Retrain on a 5%-random-users request (seconds, speed-up, NDCG@10,
membership-inference AUC, forgotten-pair rank, time to Retrain-consistency) and LEGO on gender,
age and occupation (attackers before/after, NDCG, withdraw/add vs recompute); see
:mod:`benchmarks.embedding_unlearners`.

``unlearn-extra``: UnlearnRec (pre-training apart, per-request seconds, speed-up, NDCG@10 and
membership-inference AUC against Retrain), SISA and RecEraser (initial training, per-request
seconds, shards retrained, NDCG@10 beside Retrain) on a 5%-random-users request; see
:mod:`benchmarks.unlearnrec_sharded`.

``unlearn-cli``: ``llmrec unlearn --method M`` wall seconds for AltEraser beside Retrain (or
``--methods``), each on a copy of one trained workspace with the same request, from one run;
see :mod:`benchmarks.unlearn_cli`.

``scale``: every stage's cost from 10^5 to 10^7 synthetic interactions; see
:mod:`benchmarks.scale`.

``ledger-reads``: ``forget``, ``data info``, ``retrieve`` and ``audit`` (seconds, peak RSS) after
10^4..10^6 small forget requests; see :mod:`benchmarks.ledger_reads`.

``retrain-gold``: retrain vs the original vs RecBole's BPR on the retained split of
``--scenario`` (default ``core:5%users``), from one run; see :mod:`benchmarks.retrain_gold`.

Adding a benchmark: a module in ``scripts/benchmarks/`` with ``configure(parser)`` and
``run(args) -> int`` in its ``SUBCOMMANDS``, printing through ``benchmarks.common.emit``, and one
line in :data:`SUBCOMMANDS` here.
"""

from __future__ import annotations

import os

# Idle OpenMP workers sleep instead of spinning: on a shared machine spinning threads of a
# 2-thread run fight other processes for the cores and can slow training several-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402

from benchmarks import (  # noqa: E402
    embedding_unlearners,
    generation,
    ledger_reads,
    retrain_gold,
    retrieval_layer,
    scale,
    train,
    unlearn_cli,
    unlearnrec_sharded,
)
from benchmarks.common import Subcommands  # noqa: E402

from llmrec.cli.help_format import use_everywhere  # noqa: E402

SUBCOMMANDS: Subcommands = {
    **train.SUBCOMMANDS,
    **generation.SUBCOMMANDS,
    **retrieval_layer.SUBCOMMANDS,
    **scale.SUBCOMMANDS,
    **embedding_unlearners.SUBCOMMANDS,
    **unlearnrec_sharded.SUBCOMMANDS,
    **unlearn_cli.SUBCOMMANDS,
    **retrain_gold.SUBCOMMANDS,
    **ledger_reads.SUBCOMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per benchmark; every option's help says its default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, run) in SUBCOMMANDS.items():
        doc = (run.__doc__ or configure.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.replace("%", "%%") or None)  # argparse formats help
        configure(p)
        p.set_defaults(func=run)
    use_everywhere(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
