"""Every ``from llmrec... import name`` in the library and scripts resolves, lazy ones included.

A lazy import inside a function only fails when that function runs; after a module is moved or
split, this finds the places still naming the old module (``llmrec.unlearning.sharded`` was one).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("llmrec", "retrieval")


def _imports() -> list[tuple[str, int, str, str]]:
    out = []
    for top in (*PACKAGES, "scripts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    if node.module.split(".")[0] in PACKAGES:
                        rel = str(path.relative_to(ROOT))
                        out += [(rel, node.lineno, node.module, a.name) for a in node.names]
    return out


def test_every_library_import_resolves():
    missing = []
    for where, line, module, name in _imports():
        if importlib.util.find_spec(module) is None:
            missing.append(f"{where}:{line}: no module {module}")
            continue
        mod = importlib.import_module(module)
        if name != "*" and not hasattr(mod, name):
            if importlib.util.find_spec(f"{module}.{name}") is None:
                missing.append(f"{where}:{line}: {module} has no {name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "module", ["llmrec.unlearning.sharded", "llmrec.pipelines", "llmrec.llm.generator"]
)
def test_moved_modules_are_gone(module):
    assert importlib.util.find_spec(module) is None
