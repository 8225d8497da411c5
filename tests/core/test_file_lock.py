"""llmrec.locks.file_lock: processes holding the same lock file never overlap."""

from __future__ import annotations

import multiprocessing as mp
import time

from llmrec.locks import file_lock


def _hold(lock, log, seconds: float) -> None:
    with file_lock(lock):
        start = time.monotonic()
        time.sleep(seconds)
        with open(log, "a") as fh:
            fh.write(f"{start} {time.monotonic()}\n")


def test_holders_of_one_lock_run_one_at_a_time(tmp_path):
    lock, log = tmp_path / "sub" / "x.lock", tmp_path / "log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hold, args=(lock, log, 0.2)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 3 and lock.is_file()  # the folder and the lock file were created
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    lock = tmp_path / "x.lock"
    try:
        with file_lock(lock):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_hold, args=(lock, tmp_path / "log", 0.0))
    p.start()
    p.join(10)
    assert p.exitcode == 0 and (tmp_path / "log").is_file()
