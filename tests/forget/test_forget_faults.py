"""Crash safety and concurrency of ``llmrec forget`` (requests are transactions across stages).

* The process is killed (SIGKILL-like ``os._exit``) at every stage boundary: after the ledger
  write, before each stage, after each stage's work but before it is marked done. A restart
  resumes, the audit passes, and the ledger holds the request exactly once.
* Eight processes submit 1,000 requests in total: the ledger holds exactly 1,000, every stage is
  applied and the audit passes.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmrec.data.requests import ForgetRequest, interactions_request
from llmrec.data.split import TRAIN
from llmrec.forget import runner as fp
from llmrec.forget.audit import run_audit
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore
from tests.retrieval.test_retrieval_store import shared_text_cache

DRIVER = r"""
import os, sys
from llmrec.data.ledger import Ledger
from llmrec.forget import registry as stages

point = sys.argv[1]

def crashing(stage):
    apply = stage.apply
    def run(ctx):
        if point == f"before:{stage.name}":
            os._exit(137)
        out = apply(ctx)
        if point == f"after:{stage.name}":
            os._exit(137)
        return out
    return run

for stage in stages.STAGES:
    stage.apply = crashing(stage)
if point == "after-record":
    record_many = Ledger.record_many
    def record_then_die(self, *a, **k):
        record_many(self, *a, **k)
        os._exit(137)
    Ledger.record_many = record_then_die
from llmrec.cli.main import main
sys.exit(main(sys.argv[2:]))
"""

POINTS = ["after-record"] + [
    f"{when}:{s}" for s in fp.stage_names() for when in ("before", "after")
]


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cache, _ = shared_text_cache(root)
    ws = Workspace(root / "ws")
    RetrievalStore.build(ws, cache_dir=cache)
    return root / "ws"


def _request_file(path: Path) -> Path:
    path.write_text(
        '{"kind": "user", "users": ["13"]}\n{"kind": "item", "items": ["50"]}\n'
        '{"kind": "interactions", "pairs": [["196", "242"]]}\n'
    )
    return path


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_stage_boundary_then_resume(base_ws, tmp_path, point):
    ws_dir = tmp_path / "ws"
    shutil.copytree(base_ws, ws_dir)
    req = _request_file(tmp_path / "r.jsonl")
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            point,
            "forget",
            "--request",
            str(req),
            "--workspace",
            str(ws_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 137, res.stderr[-2000:]
    ws = Workspace(ws_dir)
    with ws.ledger() as led:
        assert len(led) == 3  # recorded durably before any stage ran
    assert not run_audit(ws)["ok"]  # the interruption is visible
    fp.resume(ws)  # what a restarted 'llmrec forget' does first
    audit = run_audit(ws)
    assert audit["ok"], audit["violations"]
    again = fp.forget(ws, [ForgetRequest("user", users=("13",))])
    assert again["requests"][0]["created"] is False
    with ws.ledger() as led:
        assert len(led) == 3 and all(led.pending(s) == [] for s in fp.stage_names())
    assert RetrievalStore.load(ws).ledger_version == 3


def _submit(ws_dir: str, requests: list[dict]) -> None:
    """One submitter: each request is its own ledger transaction (what ``forget`` records),
    then the stages are applied once, as a ``forget`` call on the last request would."""
    ws = Workspace(ws_dir)
    with ws.ledger() as led:
        for r in requests:
            req = ForgetRequest.from_dict(r)
            req.validate(ws.dataset)
            led.record(req, stages=fp.stage_names())
    fp.resume(ws)


def test_eight_processes_submit_1000_requests(base_ws, tmp_path):
    ws_dir = tmp_path / "ws"
    shutil.copytree(base_ws, ws_dir)
    ws = Workspace(ws_dir)
    ds = ws.dataset
    rng = np.random.default_rng(0)
    rows = rng.choice(np.flatnonzero(ws.split.part == TRAIN), 1000, replace=False)
    reqs = [interactions_request(ds, np.array([r])).to_dict() for r in rows]
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_submit, args=(str(ws_dir), reqs[k::8])) for k in range(8)
    ]  # 125 each
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    with ws.ledger() as led:
        assert len(led) == 1000
        assert sorted(e.version for e in led.entries()) == list(range(1, 1001))
        assert len({e.request.content_hash for e in led.entries()}) == 1000
        assert all(led.pending(s) == [] for s in fp.stage_names())
    audit = run_audit(ws)
    assert audit["ok"], audit["violations"]
    assert RetrievalStore.load(ws).ledger_version == 1000
