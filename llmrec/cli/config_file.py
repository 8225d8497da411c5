"""``--config FILE``: a TOML file of command options, overridden by command-line flags.

Keys are option names (``methods`` or ``data-dir``; ``data_dir`` too). Top-level keys apply to
every command that has the option (the common options to all), a table applies to one command:
``[compare]``, ``["index build"]``. A value becomes the option's default, so a flag given on
the command line wins; it is checked like a flag (type, range, choices), and an unknown command
or option is an error.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from llmrec.errors import LlmrecError


def find_config(argv: Iterable[str]) -> str | None:
    """The value of ``--config`` anywhere in ``argv`` (``--config F`` or ``--config=F``)."""
    items = list(argv)
    found = None
    for i, a in enumerate(items):
        if a == "--config" and i + 1 < len(items):
            found = items[i + 1]
        elif a.startswith("--config="):
            found = a.split("=", 1)[1]
    return found


def load_toml(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise LlmrecError("--config needs Python >= 3.11 (its tomllib reads TOML)") from None
    p = Path(path)
    if not p.is_file():
        raise LlmrecError(f"--config {path}: no such file")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LlmrecError(f"--config {path}: not valid TOML ({exc})") from None


def command_parsers(parser: argparse.ArgumentParser, path: str = "") -> dict:
    """Every runnable subcommand's parser, by its spelling (``"audit"``, ``"index build"``)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                full = f"{path} {name}".strip()
                if "func" in child._defaults:
                    out[full] = child
                out.update(command_parsers(child, full))
    return out


def _action(parser: argparse.ArgumentParser, key: str) -> argparse.Action | None:
    dest = key.replace("-", "_")
    for a in parser._actions:
        if a.dest == dest or f"--{key}" in a.option_strings:
            return a
    return None


def _convert(action: argparse.Action, value, where: str):
    """``value`` checked and converted as argparse would the same flag."""
    name = action.option_strings[0] if action.option_strings else action.dest
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise LlmrecError(f"{where}: {name} expects true or false, got {value!r}")
        return value
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if isinstance(value, (dict, list)) and not many:
        raise LlmrecError(f"{where}: {name} expects one value, got {value!r}")
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, (dict, list)) or isinstance(v, bool) and action.type is not None:
            raise LlmrecError(f"{where}: {name} got {v!r}")
        text = str(v)
        try:
            v = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise LlmrecError(f"{where}: {name}: {exc}") from None
        if action.choices is not None and v not in action.choices:
            raise LlmrecError(f"{where}: {name}: {v!r} is not one of {list(action.choices)}")
        out.append(v)
    return out if many else out[0]


def _set(action: argparse.Action, value, where: str) -> None:
    action.default = _convert(action, value, where)
    action.required = False


def apply_config(
    parser: argparse.ArgumentParser, path: str, common: Iterable[str], given: Iterable[str]
) -> None:
    """Make ``path``'s options the defaults of ``parser``'s commands. ``common``: the dests of
    the options every command takes, on either side of the subcommand; ``given``: those of them
    on the command line (the file does not touch them: before the subcommand they would
    otherwise lose to a command table's value)."""
    data = load_toml(path)
    commands = command_parsers(parser)
    common, given = set(common), set(given)
    for key, value in data.items():
        where = f"--config {path}"
        if isinstance(value, dict):
            if key not in commands:
                raise LlmrecError(f"{where}: [{key}] is not a command (one of {sorted(commands)})")
            for k, v in value.items():
                action = _action(commands[key], k)
                if action is None or action.dest == "help":
                    raise LlmrecError(f"{where}: [{key}] {k}: no such option of 'llmrec {key}'")
                if action.dest in given:
                    _convert(action, v, f"{where} [{key}]")  # checked, but the flag wins
                    continue
                _set(action, v, f"{where} [{key}]")
            continue
        top = _action(parser, key)
        if top is not None and top.dest in common:
            _set(top, value, where)
            continue
        owners = [a for a in (_action(p, key) for p in commands.values()) if a is not None]
        if not owners or key in ("help", "func"):
            raise LlmrecError(f"{where}: {key}: no command has this option")
        for action in owners:
            _set(action, value, where)
