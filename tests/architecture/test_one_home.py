"""One home per thing, read from the source (ast):

* per-stage knowledge lives in the stage modules (``llmrec/forget/stages/``): no other module
  holds a table of stage names or artifact kinds, and the runner, the registry and the audit
  name no stage at all;
* the CLI parses and prints: it imports no private (underscore) name;
* each once-duplicated helper is defined once, and the dead code stays deleted;
* every package says what it exports (``__all__``) and every exported name resolves.
"""

from __future__ import annotations

import ast
import importlib
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES_DIR = ROOT / "llmrec" / "forget" / "stages"
#: the built-in stages' names and the registry kinds of their artifacts
STAGE_WORDS = {
    "retrieval",
    "adapters",
    "candidate-source",
    "checkpoints",
    "served",
    "retrieval-store",
    "lora-adapter",
    "checkpoint",
    "served-log",
}


def modules(*folders: str) -> dict[Path, ast.AST]:
    out = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[path] = ast.parse(path.read_text(encoding="utf-8"))
    return out


LIBRARY = modules("llmrec", "retrieval", "prompts")


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]  # fmt: skip


def test_no_table_of_stages_outside_the_stage_modules():
    """No tuple, list, set or dict literal outside ``forget/stages/`` holds two stage names or
    artifact kinds (the table ``STAGED_KINDS`` and the per-kind discovery used to)."""
    bad = []
    for path, tree in LIBRARY.items():
        if path.is_relative_to(STAGES_DIR) or path.is_relative_to(ROOT / "llmrec" / "testing"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                elts = node.keys if isinstance(node, ast.Dict) else node.elts
                words = {e.value for e in elts if isinstance(e, ast.Constant)} & STAGE_WORDS
                if len(words) >= 2:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(words)}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", ["runner.py", "registry.py", "audit.py", "stage.py"])
def test_the_runner_registry_and_audit_name_no_stage(name):
    tree = LIBRARY[ROOT / "llmrec" / "forget" / name]
    names = {"retrieval", "adapters", "candidate-source", "checkpoints", "served"}
    found = names & set(_strings(tree))
    assert not found, f"llmrec/forget/{name} names stages {sorted(found)}"


def test_the_cli_imports_no_private_name():
    bad = []
    for path, tree in modules("llmrec/cli").items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                parts = (node.module or "").split(".") + [a.name for a in node.names]
                if any(p.startswith("_") and not p.endswith("__") for p in parts):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if any(p.startswith("_") and not p.endswith("__") for p in a.name.split(".")):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} import {a.name}")
    assert not bad, "\n".join(bad)


def _definitions(top_level: bool = True) -> Counter:
    """Functions, classes and assigned names of the library (``top_level``: module-level ones
    only; else methods too), with their count."""
    seen: Counter = Counter()
    for tree in LIBRARY.values():
        for node in tree.body if top_level else ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                seen[node.name] += 1
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        seen[t.id] += 1
    return seen


ONCE = ("read_manifest", "load_model", "scrub", "BLEND_GRID", "finding", "bracket_depths", "check")
GONE = (
    "_finding",
    "_check_strategy",
    "_user_sem",
    "write_requests",
    "require_applied",
    "user_mask",
    "item_mask",
    "attribute_hidden",
    "STAGED_KINDS",
    "CooccurrenceGenerator",
    "GeneratorConfig",
)


@pytest.mark.parametrize("name", ONCE)
def test_helper_defined_once(name):
    assert _definitions()[name] == 1, f"{name} is defined {_definitions()[name]} times"


@pytest.mark.parametrize("name", GONE)
def test_duplicate_or_dead_code_stays_gone(name):
    assert _definitions(top_level=False)[name] == 0, f"{name} is back"


def test_one_json_bracket_scanner_and_one_strategy_check():
    """The string-aware bracket scan (its ``in_str`` state) and the unknown-strategy message
    are each written in one module."""
    scanners = [p for p, t in LIBRARY.items() if any(isinstance(n, ast.Name) and n.id == "in_str" for n in ast.walk(t))]  # fmt: skip
    assert [p.relative_to(ROOT).as_posix() for p in scanners] == ["llmrec/io.py"]
    checks = [p for p, t in LIBRARY.items() if any("strategy must be one of" in s for s in _strings(t))]  # fmt: skip
    assert [p.relative_to(ROOT).as_posix() for p in checks] == ["retrieval/strategies.py"]


PACKAGES = [
    "llmrec.data",
    "llmrec.evaluation",
    "llmrec.experiments",
    "llmrec.forget",
    "llmrec.llm",
    "llmrec.llm.backends",
    "llmrec.models",
    "llmrec.privacy",
    "llmrec.serving",
    "llmrec.testing",
    "llmrec.unlearning",
    "prompts",
    "retrieval",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_exports_its_public_names(package):
    mod = importlib.import_module(package)
    assert mod.__all__, f"{package} exports nothing"
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"
