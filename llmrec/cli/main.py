"""The ``llmrec`` command: one entry point, one module per subcommand group.

Each module in :data:`COMMAND_MODULES` has ``register(subparsers, common)`` which adds its
subcommands and sets ``func(args) -> int``. Errors from bad input (:class:`LlmrecError`) print one
line on stderr and exit non-zero with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from llmrec import __version__
from llmrec.cli.common import common_parser
from llmrec.errors import LlmrecError

COMMAND_MODULES = [
    "llmrec.cli.data",
    "llmrec.cli.train",
    "llmrec.cli.forget",
    "llmrec.cli.compare",
    "llmrec.cli.retrieval",
    "llmrec.cli.llm",
    "llmrec.cli.unlearn",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmrec",
        description="Recommendation unlearning: forget-aware retrieval + LLM regeneration and "
        "embedding unlearners on one data model.",
    )
    parser.add_argument("--version", action="version", version=f"llmrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_parser()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except LlmrecError as exc:
        print(f"llmrec: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("llmrec: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as exc:
        print(f"llmrec: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
