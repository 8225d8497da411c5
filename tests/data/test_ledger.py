import multiprocessing as mp
import sqlite3
import subprocess
import sys
import time

import pytest

from llmrec.data.ledger import Ledger
from llmrec.data.requests import ForgetRequest
from llmrec.errors import LedgerError


def _user(u: int) -> ForgetRequest:
    return ForgetRequest("user", users=(str(u),))


def test_same_request_twice_is_one_entry(tmp_path):
    with Ledger(tmp_path / "l.sqlite", fingerprint="fp") as led:
        v1, c1 = led.record(_user(1), stages=["retrieval"])
        v2, c2 = led.record(
            ForgetRequest.from_dict({"kind": "user", "users": [1]}), stages=["retrieval"]
        )
        assert (v1, c1) == (1, True) and (v2, c2) == (1, False)
        assert len(led) == 1 and led.version == 1
        assert led.stages(1) == {"retrieval": "pending"}
        assert led.pending("retrieval") == [1]
        led.set_stage(1, "retrieval")
        assert led.pending("retrieval") == []


def test_versions_grow_and_views_fold(tmp_path, ml100k):
    with Ledger(tmp_path / "l.sqlite", fingerprint=ml100k.fingerprint) as led:
        led.record(ForgetRequest("user", users=("1",)))
        led.record(ForgetRequest("item", items=("50",)))
        assert [e.version for e in led.entries()] == [1, 2]
        v1 = led.retained_view(ml100k, 1)
        v2 = led.retained_view(ml100k)
        assert v1.version == 1 and v2.version == 2
        assert v1.forgotten_items.sum() == 0 and v2.forgotten_items.sum() == 1
        assert v2.keep.sum() < v1.keep.sum() < ml100k.n_inter


def test_fingerprint_mismatch(tmp_path):
    Ledger(tmp_path / "l.sqlite", fingerprint="a").close()
    with pytest.raises(LedgerError, match="belongs to dataset"):
        Ledger(tmp_path / "l.sqlite", fingerprint="b")


def test_corrupt_file_is_a_clear_error(tmp_path):
    p = tmp_path / "l.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="cannot open ledger"):
        Ledger(p)


_WRITER = """
import sys
from llmrec.data.ledger import Ledger
from llmrec.data.requests import ForgetRequest
led = Ledger(sys.argv[1])
reqs = [ForgetRequest("user", users=(str(u),)) for u in range(20000)]
print("start", flush=True)
led.record_many(reqs, stages=["retrieval", "adapters"])
print("done", flush=True)
"""


def test_killed_writer_leaves_no_half_entry(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger(path).record(ForgetRequest("item", items=("1",)), stages=["retrieval", "adapters"])
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "start"
    time.sleep(0.05)
    proc.kill()
    proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    assert n in (1, 20001)  # all of the killed batch or none of it
    # every request has both stage rows: nothing half-applied
    orphans = db.execute(
        "SELECT COUNT(*) FROM requests r WHERE (SELECT COUNT(*) FROM stages s WHERE s.version=r.version) != 2"
    ).fetchone()[0]
    assert orphans == 0
    with Ledger(path) as led:  # still usable after the crash
        led.record(ForgetRequest("item", items=("2",)))


def _concurrent_writer(path: str, worker: int, n: int, shared: int) -> None:
    with Ledger(path) as led:
        for k in range(n):
            led.record(
                ForgetRequest("interactions", pairs=((str(worker), str(k)),)), stages=["retrieval"]
            )
            if k < shared:  # the same requests from every writer
                led.record(ForgetRequest("item", items=(str(k),)), stages=["retrieval"])


def test_four_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "l.sqlite")
    Ledger(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_concurrent_writer, args=(path, w, 60, 10)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Ledger(path) as led:
        assert len(led) == 4 * 60 + 10
        versions = [e.version for e in led.entries()]
        assert versions == sorted(set(versions)) and len(versions) == 250
        assert len(led.pending("retrieval")) == 250


def _open_at_barrier(path: str, barrier, errors) -> None:
    barrier.wait()
    try:
        with Ledger(path, fingerprint="fp") as led:
            led.entries()
    except Exception as exc:  # reported to the parent, which asserts none happened
        errors.put(repr(exc))


def test_processes_racing_to_create_the_ledger_all_open_it(tmp_path):
    # Regression: two ranks of `accelerate launch` opening a new workspace's ledger at once got
    # "database is locked" (switching a new file to WAL does not wait for the other process).
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    for trial in range(10):
        path = str(tmp_path / f"l{trial}.sqlite")
        barrier = ctx.Barrier(4)
        procs = [
            ctx.Process(target=_open_at_barrier, args=(path, barrier, errors)) for _ in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    assert errors.empty(), errors.get()
