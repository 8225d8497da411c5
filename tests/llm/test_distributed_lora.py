"""Issue 9: ``llmrec adapters tune`` runs unchanged under ``accelerate launch`` with 2 CPU
processes (gloo) and gives the single-process adapters.

``shards`` layout (each process tunes whole shards): byte-identical weights. ``data`` layout
(DDP over every shard): equal up to float summation order. The base model's dropout is switched
off for the comparison: with dropout the runs agree in distribution, not weight by weight,
because each process draws its own masks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmrec.llm.adapters import adapters_root, shard_dir, shard_manifest
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm
from llmrec.workspace import Workspace

SHARDS = 2
WEIGHTS = "adapter_model.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tune(ws: Path, lm: Path, processes: int, *extra: str) -> dict:
    args = ["adapters", "tune", "--workspace", str(ws), "--model", str(lm)]
    args += ["--shards", str(SHARDS), "--epochs", "2", "--seed", "5", "--json", *extra]
    if processes == 1:
        cmd = [sys.executable, "-m", "llmrec", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        cmd += ["--num_processes", str(processes), "--num_machines", "1"]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", str(free_port()), "-m", "llmrec", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out.stdout  # one report, from the main process
    return json.loads(lines[0])


def adapter(ws: Path, shard: int) -> dict[str, torch.Tensor]:
    return load_file(shard_dir(ws / "artifacts" / "adapters", shard) / WEIGHTS)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    ws = small_workspace(root)
    lm = tiny_lm(ws, root / "lm")
    config = json.loads((lm / "config.json").read_text())
    config.update({k: 0.0 for k in config if k.endswith("pdrop") or k.endswith("dropout")})
    (lm / "config.json").write_text(json.dumps(config))
    copies = {}
    for name in ("single", "shards", "data"):
        copies[name] = root / f"ws-{name}"
        shutil.copytree(ws.root, copies[name])
    reference = tune(copies["single"], lm, 1)
    assert reference["processes"] == 1 and reference["retuned"] == [0, 1]
    return copies, lm


def test_shard_layout_is_byte_identical_to_one_process(setup):
    copies, lm = setup
    rep = tune(copies["shards"], lm, 2)
    assert rep["processes"] == 2 and rep["parallel"] == "shards"
    assert rep["retuned"] == [0, 1]  # both processes' shards in the one report
    for s in range(SHARDS):
        a = (shard_dir(copies["single"] / "artifacts" / "adapters", s) / WEIGHTS).read_bytes()
        b = (shard_dir(copies["shards"] / "artifacts" / "adapters", s) / WEIGHTS).read_bytes()
        assert a == b
    ws = Workspace(copies["shards"])
    with ws.ledger() as led:
        names = {a["name"] for a in led.artifacts() if a["kind"] == "lora-adapter"}
    assert names == {f"adapter/shard-{s:03d}" for s in range(SHARDS)}
    # a second run finds every shard up to date in both processes
    again = tune(copies["shards"], lm, 2)
    assert again["retuned"] == [] and again["untouched"] == [0, 1]


def test_data_parallel_layout_matches_one_process_within_tolerance(setup):
    copies, lm = setup
    rep = tune(copies["data"], lm, 2, "--parallel", "data")
    assert rep["processes"] == 2 and rep["parallel"] == "data"
    for s in range(SHARDS):
        one, two = adapter(copies["single"], s), adapter(copies["data"], s)
        assert one.keys() == two.keys()
        assert all(one[k].abs().sum() > 0 for k in one if "lora_B" in k)  # really tuned
        for k in one:
            torch.testing.assert_close(two[k], one[k], rtol=1e-3, atol=1e-4, msg=k)
        m1 = shard_manifest(shard_dir(adapters_root(Workspace(copies["single"])), s))
        m2 = shard_manifest(shard_dir(adapters_root(Workspace(copies["data"])), s))
        assert m1["data_hash"] == m2["data_hash"]  # the same training data, audited the same
        assert m2["processes"] == 2
        assert m2["losses"] == pytest.approx(m1["losses"], rel=1e-4)
