"""``--help`` of every subcommand and every script under scripts/: every option has help text
and shows its default."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.cli.help_format import undocumented
from llmrec.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


def _script_parser(name: str) -> argparse.ArgumentParser:
    """A script's own parser (``build_parser``), or llmrec's for the thin wrappers of
    ``llmrec compare``/``bias``."""
    sys.path.insert(0, str(ROOT / "scripts"))  # bench.py imports its benchmarks package
    try:
        module = importlib.import_module(f"scripts.{name}")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    if hasattr(module, "build_parser"):
        return module.build_parser()
    assert "from llmrec.cli.main import main" in (ROOT / "scripts" / f"{name}.py").read_text()
    return build_parser()


def _options(parser: argparse.ArgumentParser, path: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, f"{path} {name}".strip())
        elif action.option_strings and action.dest not in ("help", "version"):
            yield path, parser, action


def _without_default(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for path, owner, action in _options(parser):
        text = owner._get_formatter()._expand_help(action) if action.help else ""
        if "default" not in text.lower():
            out.append(f"{path} {action.option_strings[-1]}: {text!r}")
    return out


def test_every_llmrec_option_has_help_and_a_default():
    parser = build_parser()
    assert undocumented(parser) == []
    assert _without_default(parser) == []
    assert sum(1 for _ in _options(parser)) > 150  # every subcommand walked


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_option_has_help_and_a_default(name):
    parser = _script_parser(name)
    assert undocumented(parser) == []
    assert _without_default(parser) == []


@pytest.mark.parametrize("name", ["run_cragru", "bench"])
def test_script_help_runs(name):
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and "default" in res.stdout, res.stderr[-2000:]
