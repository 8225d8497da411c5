"""CLI conventions: common options on either side of the subcommand, ``--config`` files under
the flags, progress on stderr (never on stdout), ``--quiet``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from llmrec import progress
from llmrec.cli.main import main, parse_args
from llmrec.errors import LlmrecError
from llmrec.testing.fixtures import write_tiny_dataset

COMMON = ["--workspace", "--dataset", "--data-dir", "--seed", "--json", "--quiet", "--config"]


def _ws_args(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    return ["--workspace", str(tmp_path / "ws"), "--dataset", "tiny", "--data-dir", str(data)]


def test_common_options_before_or_after_the_subcommand(tmp_path, capsys):
    ws = _ws_args(tmp_path)
    assert main(["data", "info", *ws]) == 0  # creates the workspace
    capsys.readouterr()
    assert main([*ws, "--json", "audit"]) == 0
    before = capsys.readouterr().out
    assert main(["audit", *ws, "--json"]) == 0
    after = capsys.readouterr().out
    assert json.loads(before) == json.loads(after)
    assert json.loads(before)["ok"] is True
    # the same parse, whichever side; a value after the subcommand wins over one before it
    a = parse_args(["--workspace", "W", "--seed", "3", "audit"])
    b = parse_args(["audit", "--workspace", "W", "--seed", "3"])
    assert (a.workspace, a.seed) == (b.workspace, b.seed) == ("W", 3)
    assert parse_args(["--seed", "3", "audit", "--seed", "4"]).seed == 4
    assert parse_args(["audit"]).workspace == "llmrec-workspace"


def test_top_level_help_lists_the_common_options():
    out = subprocess.run(
        [sys.executable, "-m", "llmrec", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    for flag in COMMON:
        assert flag in out, flag
    assert "before or after the subcommand" in out


def test_config_file_holds_options_and_flags_override_it(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'workspace = "from-file"\nseed = 11\nquiet = true\n'
        '[compare]\nscenario = ["random:5%users"]\nmethods = "retrain,finetune"\nseeds = 2\n'
        '["index build"]\nencoder = "cf"\n'
    )
    args = parse_args(["compare", "--config", str(cfg)])
    assert args.scenario == ["random:5%users"]  # a required option may come from the file
    assert (args.methods, args.seeds, args.workspace, args.seed) == (
        "retrain,finetune",
        2,
        "from-file",
        11,
    )
    assert args.quiet is True
    args = parse_args(
        ["--seed", "5", "compare", "--config", str(cfg), "--methods", "retrain", "--seeds", "3"]
    )
    assert (args.methods, args.seeds, args.seed) == ("retrain", 3, 5)
    assert parse_args(["index", "build", "--config", str(cfg)]).encoder == "cf"
    assert parse_args(["--config", str(cfg), "index", "build", "--encoder", "text"]).encoder == (
        "text"
    )
    # a command table applies to its command only
    assert not hasattr(parse_args(["audit", "--config", str(cfg)]), "methods")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[compare]\nseeds = 0\n", "outside"),
        ("[compare]\nbase = 'svd'\n", "not one of"),
        ("[compare]\nno_such = 1\n", "no such option"),
        ("[nope]\nx = 1\n", "is not a command"),
        ("seeds = [", "not valid TOML"),
        ("json = 'yes'\n", "true or false"),
    ],
)
def test_bad_config_is_one_line(tmp_path, capsys, text, fragment):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(LlmrecError, match=fragment):
        parse_args(["compare", "--scenario", "random:5%users", "--config", str(cfg)])
    assert main(["audit", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_heartbeat_refreshes_a_silent_step(monkeypatch, capsys):
    """A step that says nothing for a while still moves on stderr (every HEARTBEAT_S)."""
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.1)
    monkeypatch.setitem(progress._state, "enabled", True)
    with progress.phase("a silent step"):
        time.sleep(1.0)
    err = capsys.readouterr().err
    assert err.count("a silent step") >= 5  # one refresh per heartbeat, not one per step
    monkeypatch.setitem(progress._state, "enabled", False)
    with progress.phase("unseen"):
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


def _timed_run(argv: list[str]) -> tuple[str, list[tuple[float, str]], float]:
    """Run ``llmrec argv``; stdout, the stderr chunks with their arrival times, wall seconds."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmrec", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    chunks: list[tuple[float, str]] = []

    def read() -> None:
        while True:
            b = proc.stderr.read1(65536)
            if not b:
                return
            chunks.append((time.monotonic() - t0, b.decode(errors="replace")))

    reader = threading.Thread(target=read)
    reader.start()
    out = proc.stdout.read().decode()
    proc.wait(timeout=600)
    reader.join()
    assert proc.returncode == 0, "".join(c for _, c in chunks)[-2000:]
    return out, chunks, time.monotonic() - t0


def test_compare_shows_progress_on_stderr_and_strict_json_on_stdout(tmp_path):
    """The main job, small: every phase is named on stderr while it runs, no gap between two
    stderr writes exceeds 30 s, and stdout is strict JSON."""
    ws = _ws_args(tmp_path)
    argv = ["compare", *ws, "--scenario", "random:40%users", "--methods", "retrain,finetune"]
    argv += ["--set", "epochs=5", "--set", "dim=8", "--json"]
    out, chunks, wall = _timed_run(argv)
    summary = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    assert summary["report"].endswith("report.html")
    err = "".join(c for _, c in chunks)
    for step in ("original bpr", "retrain", "finetune", "serving and scoring", "bias, fairness"):
        assert step in err, step
    times = [0.0] + [t for t, _ in chunks] + [wall]
    assert max(b - a for a, b in zip(times, times[1:])) < 30
    quiet_out, quiet_chunks, _ = _timed_run([*argv, "--quiet"])
    assert quiet_chunks == [] and json.loads(quiet_out)["report"].endswith("report.html")
