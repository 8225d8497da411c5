"""Issue 9: the scale benchmark's stages on a small synthetic size (the real sizes run in
``scripts/bench.py scale``), and its co-occurrence size estimate."""

from __future__ import annotations

import argparse
import json

import numpy as np
import scipy.sparse as sp

from scripts.benchmarks import scale


def test_scale_bench_runs_every_stage_and_plots(tmp_path, capsys):
    p = argparse.ArgumentParser()
    scale.configure(p)
    plot = tmp_path / "scale.png"
    args = p.parse_args(
        ["--sizes", "20000", "--requests", "2", "--encoder", "cf", "--plot", str(plot)]
    )
    assert scale.run(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = {r["stage"] for r in rows if "stage" in r}
    assert stages == {
        "generate",
        "load",
        "bpr_epoch",
        "retrieval_build",
        "index_query",
        "retrieval_forget",
        "alteraser_forget",
    }
    assert all(r.get("seconds", 0) >= 0 and "skipped" not in r for r in rows)
    forget = next(r for r in rows if r.get("stage") == "retrieval_forget")
    assert forget["requests"] == 2 and forget["median_ms"] > 0
    assert plot.is_file() and plot.stat().st_size > 1000


def test_cooccurrence_estimate_is_exact_on_small_catalogues():
    rng = np.random.default_rng(1)
    u, i = rng.integers(0, 300, 5000), rng.integers(0, 400, 5000)
    x = sp.csr_matrix((np.ones(5000), (u, i)), shape=(300, 400))
    assert scale._cooccurrence_nnz(u, i, 300, 400) == (x.T @ x).nnz
