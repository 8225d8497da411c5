"""``scripts/bench.py scale``: how every stage's cost grows with the number of interactions.

For each size (default 10^5, 10^6, 10^7 interactions of the synthetic generator) it measures
data generation and loading, BPR-MF seconds per epoch and peak memory, the retrieval store build
(CF encoder; the FAISS factory picked by catalogue size), index query latency, the latency of a
one-user forget request on the retrieval path and through AltEraser. Each stage first estimates
its memory; a stage that would not fit is reported as skipped with the reason instead of run.
One JSON line per stage, and a log-log PNG of seconds against size.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from llmrec.unlearning.base import PeakMemory

from .common import emit


def factory_for(n_items: int) -> str:
    """FAISS index-factory string by catalogue size (see ``bench.py index-scale``)."""
    if n_items <= 100_000:
        return "Flat"
    return f"IVF{int(4 * np.sqrt(n_items))},Flat"


def _available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10**5, 10**6, 10**7],
        help="interaction counts of the synthetic datasets",
    )
    p.add_argument(
        "--requests", type=int, default=5, help="one-user forget requests timed per size"
    )
    p.add_argument("--workdir", default=None, help="keep generated data and artifacts here")
    p.add_argument("--plot", default="scale.png", help="log-log plot of seconds per stage vs size")
    p.add_argument("--seed", type=int, default=2020, help="random seed")
    p.add_argument(
        "--encoder",
        choices=["text", "cf"],
        default="text",
        help="retrieval encoder: text (no user data: forgetting never re-encodes) or cf",
    )
    p.add_argument(
        "--memory-fraction", type=float, default=0.6, help="of available RAM a stage may plan for"
    )


def _timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds, peak memory increase in MB)``."""
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        sec = time.perf_counter() - t0
    return out, sec, mem.increase_mb


def run(args: argparse.Namespace) -> int:
    """Scale benchmark (synthetic data): per-stage seconds and memory at each size."""
    from llmrec.data.requests import users_request
    from llmrec.data.synthetic import SyntheticSpec, write_synthetic
    from llmrec.models import build_model
    from llmrec.models.training import retained_data
    from llmrec.unlearning.alteraser import AltEraser
    from llmrec.workspace import Workspace
    from retrieval.store import RetrievalStore

    root = Path(args.workdir or tempfile.mkdtemp(prefix="llmrec-scale-"))
    rows = []
    budget = args.memory_fraction * _available_bytes()
    try:
        for n in args.sizes:
            spec = SyntheticSpec(n, seed=args.seed)
            n_users, n_items = spec.resolved()
            base = {"bench": "scale", "interactions": n, "users": n_users, "items": n_items}
            name = f"syn{n}"
            # generation writes ~30 bytes per interaction; loading holds ~100
            need = 300 * n
            if need > budget:
                rows.append(
                    emit(base | {"stage": "data", "skipped": f"needs ~{need / 2**30:.1f} GiB"})
                )
                continue
            folder, sec, mb = _timed(write_synthetic, spec, root / "data", name)
            rows.append(emit(base | {"stage": "generate", "seconds": sec, "peak_mb": mb}))
            ws = Workspace(root / f"ws{n}", dataset=name, data_dir=root / "data")
            ds, sec, mb = _timed(getattr, ws, "dataset")
            rows.append(emit(base | {"stage": "load", "seconds": sec, "peak_mb": mb}))
            data = retained_data(ws)

            model = build_model("bpr", ds.n_users, ds.n_items, epochs=1, seed=args.seed)
            _, sec, mb = _timed(model.fit, *data.train)
            rows.append(emit(base | {"stage": "bpr_epoch", "seconds": sec, "peak_mb": mb}))

            counts_bytes = (
                4 * ds.n_items**2
            )  # the co-occurrence candidate model's dense item-item counts
            factory = factory_for(ds.n_items)
            if 3 * counts_bytes > budget:
                nnz = _cooccurrence_nnz(data.train[0], data.train[1], ds.n_users, ds.n_items)
                rows.append(
                    emit(
                        base
                        | {
                            "stage": "retrieval_build",
                            "skipped": f"dense item-item co-occurrence counts need "
                            f"{counts_bytes / 2**30:.1f} GiB (x3 while building) for {ds.n_items} "
                            f"items; sparse ones ~{nnz:.2g} non-zeros "
                            f"({nnz / ds.n_items**2:.0%} dense, ~{8 * nnz / 2**30:.0f} GiB as "
                            f"int32 CSR, plus the working memory of forming the product); budget "
                            f"{budget / 2**30:.1f} GiB",
                            "cooccurrence_nnz_estimate": nnz,
                        }
                    )
                )
            else:
                store, sec, mb = _timed(
                    RetrievalStore.build,
                    ws,
                    encoder=args.encoder,
                    factory=factory,
                    cache_dir=root / "cache",
                )
                rows.append(
                    emit(
                        base
                        | {
                            "stage": "retrieval_build",
                            "factory": factory,
                            "seconds": sec,
                            "peak_mb": mb,
                        }
                    )
                )
                q = store.item_embeddings[
                    np.random.default_rng(0).integers(0, len(store.item_embeddings), 200)
                ]
                t0 = time.perf_counter()
                store.index.search(q, 10)
                rows.append(
                    emit(
                        base
                        | {
                            "stage": "index_query",
                            "factory": factory,
                            "ms_per_query": 1000 * (time.perf_counter() - t0) / len(q),
                        }
                    )
                )
                users = _median_users(ds, args.requests, args.seed)
                lat = []
                with ws.ledger() as led:
                    for u in users:
                        led.record(users_request(ds, np.array([u])), stages=["retrieval"])
                        t0 = time.perf_counter()
                        store.apply(ws, ledger=led)
                        lat.append(time.perf_counter() - t0)
                rows.append(
                    emit(
                        base
                        | {
                            "stage": "retrieval_forget",
                            "median_ms": 1000 * statistics.median(lat),
                            "seconds": statistics.median(lat),
                            "requests": len(lat),
                            "encoder": args.encoder,
                        }
                    )
                )
            # AltEraser on one user's interactions (the model of the bpr_epoch stage)
            u = _median_users(ds, 1, args.seed + 1)[0]
            req = users_request(ds, np.array([u]))
            eraser = AltEraser()
            (_, record), sec, mb = _timed(eraser.unlearn, model, (ds, ws.split, data.view), req)
            rows.append(
                emit(
                    base
                    | {
                        "stage": "alteraser_forget",
                        "seconds": record.seconds,
                        "peak_mb": mb,
                        "iterations": record.iterations,
                    }
                )
            )
            shutil.rmtree(root / f"ws{n}", ignore_errors=True)
        _plot(rows, args.plot)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _cooccurrence_nnz(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> float:
    """Non-zeros of the item-item co-occurrence matrix, estimated from 1,000 sampled items."""
    import scipy.sparse as sp

    x = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    cols = np.random.default_rng(0).choice(n_items, min(1000, n_items), replace=False)
    block = x.tocsc()[:, cols].T @ x
    return float(block.nnz) * n_items / len(cols)


def _median_users(ds, k: int, seed: int) -> np.ndarray:
    """``k`` users of median activity (a typical request), seeded."""
    act = np.bincount(ds.inter_user, minlength=ds.n_users)
    med = np.median(act)
    pool = np.flatnonzero(np.abs(act - med) <= max(1, 0.1 * med))
    return np.random.default_rng(seed).choice(pool, size=min(k, len(pool)), replace=False)


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    stages = sorted({r["stage"] for r in rows if "seconds" in r})
    for st in stages:
        pts = sorted(
            (r["interactions"], r["seconds"]) for r in rows if r["stage"] == st and "seconds" in r
        )
        if pts:
            ax.plot(*zip(*pts), marker="o", label=st)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions")
    ax.set_ylabel("seconds")
    ax.set_title("llmrec cost per stage vs dataset size (2 CPU cores)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    emit({"bench": "scale", "plot": str(Path(path).resolve())})


SUBCOMMANDS = {"scale": (configure, run)}
