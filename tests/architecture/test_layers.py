"""The library's layering, read from the source (ast), so it cannot drift silently.

Layers, low to high (a module may import only its own layer or a lower one; imports inside
functions count too):

0. ``llmrec`` (the package: its version), ``llmrec.errors``, ``llmrec.io``, ``llmrec.integrity``,
   ``llmrec.locks``, ``llmrec.progress``, ``prompts`` (templates and their loader)
1. ``llmrec.data``, ``llmrec.workspace`` (a workspace is the dataset, split and ledger on disk)
2. ``llmrec.evaluation`` (RecBole's protocol over any score function: it never needs a model
   class, and the models' early stopping uses it, so it sits below them)
3. ``llmrec.models``, ``llmrec.privacy`` (the CF models; the privacy attacks on a model)
4. ``retrieval``, ``llmrec.llm``, ``llmrec.unlearning`` (the two forget paths and the LM)
5. ``llmrec.serving`` (CRAGRU serving, the served-score blend, the served log)
6. ``llmrec.forget`` (the forget runner, the stage protocol and registry, the stages, the audit)
7. ``llmrec.experiments`` (comparison harness, scenarios, the paper protocol)
8. ``llmrec.cli``, ``llmrec.__main__``
9. ``llmrec.testing`` (the public contract suites and fixtures for plug-in authors: they
   exercise any layer below, the CLI included; no library module imports them)

Also checked: no import cycle between modules, no ``importlib.import_module`` / ``__import__``
(imports by string hide the data flow), and no benchmark code in the library (benchmarks live
in ``scripts/benchmarks/``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("llmrec", "retrieval", "prompts")

LAYERS: dict[str, int] = {
    "llmrec": 0,
    "llmrec.errors": 0,
    "llmrec.io": 0,
    "llmrec.integrity": 0,
    "llmrec.locks": 0,
    "llmrec.progress": 0,
    "prompts": 0,
    "llmrec.data": 1,
    "llmrec.workspace": 1,
    "llmrec.evaluation": 2,
    "llmrec.models": 3,
    "llmrec.privacy": 3,
    "retrieval": 4,
    "llmrec.llm": 4,
    "llmrec.unlearning": 4,
    "llmrec.serving": 5,
    "llmrec.forget": 6,
    "llmrec.experiments": 7,
    "llmrec.cli": 8,
    "llmrec.__main__": 8,
    "llmrec.testing": 9,
}


def layer_of(module: str) -> int:
    """Layer of the longest :data:`LAYERS` prefix of ``module``; KeyError if none."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def library_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the library packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, tree: ast.AST, known: set[str], is_package: bool) -> Iterator[tuple[str, int]]:  # fmt: skip
    """(imported library module, line) for every import statement anywhere in ``tree``; ``from
    pkg import name`` counts as an import of ``pkg.name`` when that is a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target.split(".")[0] not in PACKAGES:
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            if subs:
                yield from ((s, node.lineno) for s in subs)
            if len(subs) < len(node.names):
                yield target, node.lineno


def dynamic_imports(tree: ast.AST) -> Iterator[int]:
    """Lines calling ``importlib.import_module``, ``import_module`` or ``__import__``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "__import__"):
                yield node.lineno


def benchmark_code(module: str, tree: ast.AST) -> Iterator[str]:
    """Why ``module`` looks like benchmark code: a *bench* name, or a JSON-lines ``emit``, or a
    ``print(json.dumps(...))`` outside the CLI (benchmarks print results; the library returns
    them)."""
    if "bench" in module.split(".")[-1]:
        yield f"{module}: module named like a benchmark"
    if layer_of(module) == LAYERS["llmrec.cli"]:
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.strip("_") in ("emit", "bench", "benchmark"):  # fmt: skip
            yield f"{module}:{node.lineno}: defines {node.name}()"
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "print"
            and any(
                isinstance(a, ast.Call)
                and isinstance(a.func, ast.Attribute)
                and a.func.attr == "dumps"
                for a in node.args
            )
        ):
            yield f"{module}:{node.lineno}: prints JSON lines"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


class Scan:
    """Every fact the checks need, parsed once."""

    def __init__(self, root: Path = ROOT) -> None:
        self.files = library_modules(root)
        known = set(self.files)
        self.trees = {m: ast.parse(p.read_text(), str(p)) for m, p in self.files.items()}
        self.edges: dict[str, list[tuple[str, int]]] = {}
        for m, tree in self.trees.items():
            is_pkg = self.files[m].name == "__init__.py"
            self.edges[m] = [(t, line) for t, line in imports_of(m, tree, known, is_pkg) if t != m]

    def upward(self) -> list[str]:
        return [
            f"{m}:{line} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
            for m, edges in sorted(self.edges.items())
            for t, line in edges
            if layer_of(t) > layer_of(m)
        ]

    def cycles(self) -> list[list[str]]:
        graph = {m: {t for t, _ in e if t in self.files} for m, e in self.edges.items()}
        return strongly_connected(graph)

    def dynamic(self) -> list[str]:
        return [f"{m}:{line}" for m, tree in sorted(self.trees.items()) for line in dynamic_imports(tree)]  # fmt: skip

    def benchmarks(self) -> list[str]:
        return [why for m, tree in sorted(self.trees.items()) for why in benchmark_code(m, tree)]


@pytest.fixture(scope="module")
def scan() -> Scan:
    return Scan()


def test_every_library_module_has_a_layer(scan):
    missing = []
    for m in scan.files:
        try:
            layer_of(m)
        except KeyError:
            missing.append(m)
    assert not missing, f"modules outside every layer (add them to LAYERS): {missing}"


def test_no_module_imports_a_higher_layer(scan):
    bad = scan.upward()
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules(scan):
    cycles = scan.cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_by_string_in_the_library(scan):
    bad = scan.dynamic()
    assert not bad, "import_module/__import__ calls (import the module by name):\n" + "\n".join(bad)  # fmt: skip


def test_no_benchmark_code_in_the_library(scan):
    bad = scan.benchmarks()
    assert not bad, "benchmark code in the library (move it to scripts/benchmarks/):\n" + "\n".join(bad)  # fmt: skip


# ------------------------------------------------------------------ the checks themselves
def _tree_of(root: Path, files: dict[str, str]) -> Scan:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        (root / pkg).mkdir(exist_ok=True)
    return Scan(root)


def test_the_checks_find_planted_violations(tmp_path):
    s = _tree_of(
        tmp_path,
        {
            "llmrec/__init__.py": "",
            "llmrec/data/__init__.py": "",
            "llmrec/data/a.py": "def f():\n    from llmrec.experiments import run\n",
            "llmrec/experiments/__init__.py": "",
            "llmrec/experiments/run.py": "from . import other\nimport importlib\n"
            "importlib.import_module('llmrec.x')\n",
            "llmrec/experiments/other.py": "from llmrec.experiments.run import go\n",
            "llmrec/models/speed_bench.py": "import json\ndef emit(r):\n    print(json.dumps(r))\n",
        },
    )
    assert s.upward() == ["llmrec.data.a:2 (layer 1) imports llmrec.experiments.run (layer 7)"]
    assert s.cycles() == [["llmrec.experiments.other", "llmrec.experiments.run"]]
    assert s.dynamic() == ["llmrec.experiments.run:3"]
    assert s.benchmarks() == [
        "llmrec.models.speed_bench: module named like a benchmark",
        "llmrec.models.speed_bench:2: defines emit()",
        "llmrec.models.speed_bench:3: prints JSON lines",
    ]


def test_a_clean_tree_passes(tmp_path):
    s = _tree_of(
        tmp_path,
        {
            "llmrec/__init__.py": "",
            "llmrec/models/__init__.py": "from llmrec.models.base import M\n",
            "llmrec/models/base.py": "from llmrec.data import split\nM = 1\n",
            "llmrec/data/__init__.py": "",
            "llmrec/data/split.py": "import numpy\n",
            "llmrec/cli/main.py": "import json\nprint(json.dumps({}))\n",
        },
    )
    assert not s.upward() and not s.cycles() and not s.dynamic() and not s.benchmarks()
