"""``--help`` text: every option says its default (added where its help does not already)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; each option's help ends with its default unless
    it names one itself (flags: on/off, no value: none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is argparse.SUPPRESS
            or "default" in text.lower()
        ):
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)".strip()
        if isinstance(action, argparse._StoreFalseAction):
            return f"{text} (default: on)".strip()
        if action.default is None or action.default == []:
            return f"{text} (default: none)".strip()
        return f"{text} (default: %(default)s)".strip()


def use_everywhere(parser: argparse.ArgumentParser) -> None:
    """:class:`HelpFormatter` for ``parser`` and every subcommand parser under it."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                use_everywhere(child)


def undocumented(parser: argparse.ArgumentParser, path: str = "") -> list[str]:
    """``"subcommand --option"`` for every option under ``parser`` without help text."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += undocumented(child, f"{path} {name}".strip())
        elif action.option_strings and not (action.help or "").strip():
            if action.help is not argparse.SUPPRESS:
                out.append(f"{path} {action.option_strings[-1]}".strip())
    return out
