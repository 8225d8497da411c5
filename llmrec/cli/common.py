"""Options every command shares and the way results are printed."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator

from llmrec.errors import LlmrecError
from llmrec.io import to_json
from llmrec.workspace import DEFAULT_WORKSPACE, Workspace

# ------------------------------------------------------------------ validated option types
MAX_INT = 2**31 - 1  # no count, size or epoch number beyond this is meaningful


def _int(text: str) -> int:
    """ASCII digits with an optional sign: ``int()`` alone also takes '١٠', '１２３' and '1_0'."""
    s = str(text).strip()
    if len(s) > 20:
        raise argparse.ArgumentTypeError(f"{s[:20]}... is not an integer in range")
    if not _INT.fullmatch(s):
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer (ASCII digits)")
    return int(s)


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def int_in(lo: int | None = None, hi: int | None = MAX_INT, what: str = "") -> callable:
    """argparse ``type=``: an integer in ``[lo, hi]``."""

    def parse(text: str) -> int:
        v = _int(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            lo_s = "-inf" if lo is None else str(lo)
            hi_s = "inf" if hi is None else str(hi)
            raise argparse.ArgumentTypeError(f"{v} is outside [{lo_s}, {hi_s}]{what}")
        return v

    parse.__name__ = "integer"
    return parse


positive_int = int_in(1)
nonneg_int = int_in(0)
seed_int = int_in(0, 2**32 - 1)


def float_in(
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> callable:
    """argparse ``type=``: a finite float in the interval (``*_open``: bound excluded)."""

    def parse(text: str) -> float:
        s = str(text).strip()
        if not _FLOAT.fullmatch(s):
            raise argparse.ArgumentTypeError(f"{s[:30]!r} is not a number (ASCII digits)")
        v = float(s)
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{s[:30]} is not a finite number")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"{v:g} must be {'>' if lo_open else '>='} {lo:g}")
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise argparse.ArgumentTypeError(f"{v:g} must be {'<' if hi_open else '<='} {hi:g}")
        return v

    parse.__name__ = "number"
    return parse


MAX_FLOAT = 1e6  # no rate or weight beyond this is meaningful
finite_float = float_in()
positive_float = float_in(0.0, MAX_FLOAT, lo_open=True)
nonneg_float = float_in(0.0, MAX_FLOAT)
unit_float = float_in(0.0, 1.0)


def nonempty(text: str) -> str:
    """argparse ``type=``: a non-blank string (paths, names)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return str(text)


def device_name(text: str) -> str:
    """argparse ``type=``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and available here."""
    s = str(text).strip()
    kind, _, num = s.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (num and (kind != "cuda" or not num.isdigit())):
        raise argparse.ArgumentTypeError(f"{s[:30]!r} is not a device (cpu, cuda, cuda:N, mps)")
    if kind == "cpu":
        return s
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{s}: this torch build has no usable CUDA device")
        if num and int(num) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{s}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{s}: MPS is not available here")
    return s


#: the options every command takes, on either side of the subcommand: ``(flags, keywords)``
COMMON_OPTIONS: list[tuple[tuple[str, ...], dict]] = [
    (
        ("--workspace",),
        dict(
            default=DEFAULT_WORKSPACE,
            type=nonempty,
            help=f"workspace folder (default: {DEFAULT_WORKSPACE})",
        ),
    ),
    (
        ("--dataset",),
        dict(default=None, help="atomic dataset name (default: ml-100k, or the workspace's)"),
    ),
    (
        ("--data-dir",),
        dict(
            default=None,
            help="folder holding NAME.inter/.user/.item (default: recbole's examples)",
        ),
    ),
    (
        ("--seed",),
        dict(type=seed_int, default=2020, help="random seed in [0, 2**32) (default: 2020)"),
    ),
    (
        ("--json",),
        dict(
            action="store_true",
            default=False,
            help="print a machine-readable JSON result on stdout (strict JSON; progress stays "
            "on stderr) (default: off)",
        ),
    ),
    (
        ("--quiet",),
        dict(
            action="store_true",
            default=False,
            help="no progress bars or progress lines on stderr (default: off)",
        ),
    ),
    (
        ("--config",),
        dict(
            default=None,
            type=nonempty,
            metavar="FILE",
            help="TOML file of the command's options (keys are option names: top-level keys "
            "for every command, a [COMMAND] table for one, e.g. [compare] or ['index build']); "
            "flags given on the command line override it (default: none)",
        ),
    ),
]


def add_common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The common options on ``parser``: with their defaults on the top-level parser
    (``top``), without on a subcommand's, so that a value given before the subcommand is not
    reset by the subcommand's default and one given after it wins."""
    g = parser.add_argument_group("common options (before or after the subcommand)")
    for flags, kw in COMMON_OPTIONS:
        g.add_argument(*flags, **(kw if top else {**kw, "default": argparse.SUPPRESS}))


def common_parser() -> argparse.ArgumentParser:
    """Parent parser of every subcommand: the :data:`COMMON_OPTIONS`."""
    p = argparse.ArgumentParser(add_help=False)
    add_common_options(p, top=False)
    return p


def open_workspace(
    args: argparse.Namespace, split: dict | None = None, read_only: bool = False
) -> Workspace:
    """The workspace of ``--workspace`` (``read_only``: a command that only reads; it writes
    nothing there, not even a new workspace's ``workspace.json``)."""
    return Workspace(
        args.workspace,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=split,
        read_only=read_only,
    )


def emit(args: argparse.Namespace, result: dict, text: str | None = None) -> None:
    """Print ``result`` as JSON with ``--json``, else ``text`` (or an indented JSON fallback)."""
    if args.json:
        sys.stdout.write(to_json(result, strict=True) + "\n")
    else:
        text = text if text is not None else to_json(result, indent=2, strict=True)
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


def parse_overrides(items: list[str]) -> dict:
    """``["lr=0.01", "epochs=5"]`` -> ``{"lr": 0.01, "epochs": 5}`` (values parsed as JSON)."""
    out: dict = {}
    for kv in items:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise LlmrecError(f"--set expects KEY=VALUE, got {kv!r}")
        try:
            out[key] = json.loads(value, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            out[key] = value
        if isinstance(out[key], float) and not math.isfinite(out[key]):
            raise LlmrecError(f"--set {key}: {value!r} is not a finite number")
    return out


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def check_override_types(params: dict, defaults: dict, what: str) -> None:
    """Each ``--set`` value must have the type of the default it replaces (numbers for
    numbers, finite), so that ``lr=abc`` fails here and not deep inside training."""
    for k, v in params.items():
        if k not in defaults or defaults[k] is None:
            continue
        d = defaults[k]
        if isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, (int, float)):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if ok and isinstance(d, int) and not isinstance(v, int):
                ok = float(v).is_integer()
        elif isinstance(d, str):
            ok = isinstance(v, str)
        else:
            ok = True
        if not ok:
            raise LlmrecError(
                f"--set {k}={v!r}: {what} expects a {type(d).__name__} (default {d!r})"
            )


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress goes to stderr unless ``--quiet`` (``--json`` keeps stdout clean, not stderr)."""
    return not getattr(args, "quiet", False)


def fmt_metrics(metrics: dict, keys=("recall", "ndcg", "hit", "mrr"), ks=(5, 10, 20)) -> str:
    rows = []
    for k in ks:
        rows.append(
            f"  @{k:<3d} "
            + "  ".join(f"{m}={metrics.get(f'{m}@{k}', float('nan')):.4f}" for m in keys)
        )
    return "\n".join(rows)


class LazyChoices:
    """An option's ``choices`` read from a registry only when a value is checked or the help is
    shown, so building the parser imports no model code (the CLI starts without torch). Give
    the option a ``metavar`` (argparse would list the choices at registration) and write
    ``%(choices)s`` in its help."""

    def __init__(self, load: Callable[[], Iterable[str]]) -> None:
        self._load = load

    def _names(self) -> list[str]:
        return list(self._load())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


class MethodOption(argparse.Action):
    """``--method NAME`` (stored as given; the command checks it against the registry, one line
    naming the known ones). Its help may say ``%(methods)s``: the registered methods of
    ``family``, read only when the help is shown."""

    def __init__(self, option_strings, dest, family: str | None = None, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.methods = _Shown(lambda: ", ".join(_method_names(family)))

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)


class _Shown:
    """Text made when it is formatted (``str``)."""

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make

    def __str__(self) -> str:
        return self._make()


def _method_names(family: str | None) -> list[str]:
    from llmrec.unlearning import method_names

    return method_names(family)


def model_names() -> list[str]:
    """The registered CF base models (``llmrec.models.MODEL_REGISTRY``)."""
    from llmrec.models import MODEL_REGISTRY

    return sorted(MODEL_REGISTRY)


def methods_help(family: str | None = None) -> str:
    """Every registered method (of ``family`` if given): its name, exact or approximate, its
    family, the request kinds it handles, and the first paragraph of its docstring."""
    import textwrap

    from llmrec.unlearning import METHODS

    chosen = {n: c for n, c in METHODS.items() if family is None or c.family == family}
    width = max((len(n) for n in chosen), default=0)
    lines = ["methods:"]
    for name, cls in chosen.items():
        kind = "exact" if cls.exact else "approximate"
        fam = "" if family else f"{cls.family}; "
        lines.append(f"  {name:<{width}}  [{fam}{kind}; handles {', '.join(cls.handles)}]")
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        if summary:
            pad = " " * (width + 4)
            lines.append(textwrap.fill(summary, 88, initial_indent=pad, subsequent_indent=pad))
    return "\n".join(lines)
