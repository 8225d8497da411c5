"""Commands that need no model start without torch (issue 27, item 11: a read costs what its
answer costs, and importing torch costs ~1 s and ~220 MB per command). ``--help``, ``data
info`` and ``audit`` of a workspace with no checkpoint must not import it; the help of a
command listing a registry of models or methods, and ``train``, still do."""

import json
import subprocess
import sys

import pytest

from llmrec.data.requests import ForgetRequest
from llmrec.forget.runner import forget
from llmrec.workspace import Workspace

PROBE = """
import json, sys
from llmrec.cli.main import main
try:
    rc = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    rc = exc.code
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


def _run(argv: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture()
def ws_args(tmp_path, tiny_dir) -> list[str]:
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    forget(ws, [ForgetRequest("interactions", pairs=(("u1", "i4"),))])
    return ["--workspace", str(ws.root), "--dataset", "tiny", "--data-dir", str(tiny_dir)]


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["data", "info"], ["audit"]],
    ids=["help", "data-info", "audit"],
)
def test_commands_without_a_model_do_not_import_torch(argv, ws_args):
    out = _run(argv if "--help" in argv else [*argv, *ws_args])
    assert out == {"rc": 0, "torch": False}


def test_help_still_lists_the_registries():
    proc = subprocess.run(
        [sys.executable, "-m", "llmrec", "train", "--help"], capture_output=True, text=True
    )
    assert "bpr, lightgcn" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "llmrec", "unlearn", "--help"], capture_output=True, text=True
    )
    assert "alteraser" in proc.stdout.split("methods:")[0]  # the --method help, not the epilog
    assert "methods:" in proc.stdout


def test_training_still_loads_torch(ws_args):
    out = _run(["train", "--epochs", "1", *ws_args])
    assert out == {"rc": 0, "torch": True}
