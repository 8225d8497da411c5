"""The README's Python example (the code block under ``## Python API``) runs as written: at
most 10 lines, ml-100k, BPR, AltEraser, evaluation."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> str:
    """The first ```python block of the README's ``## Python API`` section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under '## Python API'"
    return match.group(1)


def test_the_example_is_at_most_ten_lines():
    lines = [ln for ln in example().splitlines() if ln.strip()]
    assert len(lines) <= 10, lines


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(example(), "README.md", "exec"), {"__name__": "readme_example"})
    seconds, ndcg = (float(v) for v in capsys.readouterr().out.split())
    assert seconds > 0 and 0.05 < ndcg < 1, (seconds, ndcg)
    assert (tmp_path / "llmrec-workspace" / "workspace.json").is_file()
