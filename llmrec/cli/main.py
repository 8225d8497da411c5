"""The ``llmrec`` command: one entry point, one module per subcommand group.

Each module in :data:`COMMAND_MODULES` (imported here by name, so readers and tools see the
command tree) has ``register(subparsers, common)`` which adds its subcommands and sets
``func(args) -> int``. Errors from bad input (:class:`LlmrecError`), an
unusable ledger (SQLite errors) or the environment print one line on stderr and exit non-zero
with no traceback; anything else unexpected does too, saying so (``LLMREC_DEBUG=1`` re-raises it
with its traceback). Library warnings are silenced so that an error is the only thing on stderr
(``PYTHONWARNINGS`` still takes effect).
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import warnings

from llmrec import __version__, progress
from llmrec.cli import compare, data, forget, llm, retrieval, train, unlearn
from llmrec.cli.common import (
    COMMON_OPTIONS,
    add_common_options,
    common_parser,
    finite_float,
    int_in,
)
from llmrec.cli.config_file import apply_config, find_config
from llmrec.cli.help_format import use_everywhere
from llmrec.errors import LlmrecError

#: the sub-command groups, in the order ``llmrec --help`` lists them
COMMAND_MODULES = [data, train, forget, compare, retrieval, llm, unlearn]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="llmrec",
        description="Recommendation unlearning: forget-aware retrieval + LLM regeneration and "
        "embedding unlearners on one data model.",
    )
    parser.add_argument("--version", action="version", version=f"llmrec {__version__}")
    add_common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = common_parser()
    for module in COMMAND_MODULES:
        module.register(sub, common)
    _bound_plain_numbers(parser)
    use_everywhere(parser)
    return parser


_ANY_INT = int_in(None)


def _bound_plain_numbers(parser: argparse.ArgumentParser) -> None:
    """Options still declared ``type=int``/``type=float`` get at least bounded integers and
    finite floats (no 5,000-digit or NaN value reaches a command); their own ranges are checked
    where they are declared (:mod:`llmrec.cli.common`)."""
    for action in parser._actions:
        if action.type is int:
            action.type = _ANY_INT
        elif action.type is float:
            action.type = finite_float
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _bound_plain_numbers(child)


_COMMON_DESTS = [flags[0].lstrip("-").replace("-", "_") for flags, _ in COMMON_OPTIONS]


def _given_common(argv: list[str]) -> list[str]:
    """The common options present on the command line (either side of the subcommand)."""
    flags = {flags[0]: flags[0].lstrip("-").replace("-", "_") for flags, _ in COMMON_OPTIONS}
    return [flags[a.split("=", 1)[0]] for a in argv if a.split("=", 1)[0] in flags]


MAX_MESSAGE = 500  # an error line quoting a 1 MB id is cut, not printed whole


def _line(msg: object) -> str:
    """One line of at most :data:`MAX_MESSAGE` characters."""
    text = " ".join(str(msg).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _error(msg: object, code: int) -> int:
    sys.stdout.flush()
    print(f"llmrec: error: {_line(msg)}", file=sys.stderr, flush=True)
    return code


def _quiet_libraries() -> None:
    if not sys.warnoptions and not os.environ.get("PYTHONWARNINGS"):
        warnings.simplefilter("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weight-loading bars too
    for name in ("transformers", "accelerate", "peft", "torch", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (no usage block before them), and whose
    epilog may be a function, called when the help is shown (a method list reads the registries,
    which import torch: building the parser does not)."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_line(message)}\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed, the ``--config`` file's values (if any) as defaults under the flags;
    :class:`LlmrecError` for a bad config file, ``SystemExit`` for a bad flag (argparse)."""
    parser = build_parser()
    config = find_config(argv)
    if config is not None:
        apply_config(parser, config, _COMMON_DESTS, _given_common(argv))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _quiet_libraries()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
    except LlmrecError as exc:
        return _error(exc, exc.exit_code)
    if not getattr(args, "func", None):
        return _error("no command given ('llmrec --help' lists them)", 2)
    progress.configure(not args.quiet)
    try:
        return int(args.func(args) or 0)
    except LlmrecError as exc:
        return _error(exc, exc.exit_code)
    except KeyboardInterrupt:
        print("llmrec: interrupted", file=sys.stderr)
        return 130
    except sqlite3.Error as exc:
        from llmrec.data.ledger import explain

        ledger = os.path.join(getattr(args, "workspace", "."), "ledger.sqlite")
        return _error(explain(exc, ledger), 2)
    except (OSError, MemoryError) as exc:
        return _error(exc, 1)
    except RecursionError:
        return _error("input nested too deeply", 2)
    except Exception as exc:  # last resort: one line, never a traceback (LLMREC_DEBUG re-raises)
        if os.environ.get("LLMREC_DEBUG"):
            raise
        return _error(f"unexpected {type(exc).__name__}: {exc} (LLMREC_DEBUG=1 shows where)", 1)


if __name__ == "__main__":
    raise SystemExit(main())
