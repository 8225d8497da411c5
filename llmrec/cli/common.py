"""Options every command shares and the way results are printed."""

from __future__ import annotations

import argparse
import json
import sys

from llmrec.errors import LlmrecError
from llmrec.io import to_json
from llmrec.workspace import DEFAULT_WORKSPACE, Workspace


def common_parser() -> argparse.ArgumentParser:
    """Parent parser: --workspace, --dataset, --data-dir, --seed, --json."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument(
        "--workspace", default=DEFAULT_WORKSPACE, help="workspace folder (default: %(default)s)"
    )
    g.add_argument(
        "--dataset", default=None, help="atomic dataset name (default: ml-100k, or the workspace's)"
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="folder holding NAME.inter/.user/.item (default: recbole's examples)",
    )
    g.add_argument("--seed", type=int, default=2020, help="random seed (default: %(default)s)")
    g.add_argument(
        "--json", action="store_true", help="print a machine-readable JSON result on stdout"
    )
    return p


def open_workspace(args: argparse.Namespace, split: dict | None = None) -> Workspace:
    return Workspace(args.workspace, dataset=args.dataset, data_dir=args.data_dir, split=split)


def emit(args: argparse.Namespace, result: dict, text: str | None = None) -> None:
    """Print ``result`` as JSON with ``--json``, else ``text`` (or an indented JSON fallback)."""
    if args.json:
        sys.stdout.write(to_json(result) + "\n")
    else:
        sys.stdout.write((text if text is not None else to_json(result, indent=2)) + "\n")
    sys.stdout.flush()


def parse_overrides(items: list[str]) -> dict:
    """``["lr=0.01", "epochs=5"]`` -> ``{"lr": 0.01, "epochs": 5}`` (values parsed as JSON)."""
    out: dict = {}
    for kv in items:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise LlmrecError(f"--set expects KEY=VALUE, got {kv!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr when it is a terminal and JSON output is not requested."""
    return sys.stderr.isatty() and not args.json


def fmt_metrics(metrics: dict, keys=("recall", "ndcg", "hit", "mrr"), ks=(5, 10, 20)) -> str:
    rows = []
    for k in ks:
        rows.append(
            f"  @{k:<3d} "
            + "  ".join(f"{m}={metrics.get(f'{m}@{k}', float('nan')):.4f}" for m in keys)
        )
    return "\n".join(rows)
