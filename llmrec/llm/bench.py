"""``scripts/bench.py llm``: regeneration throughput (users per second) for each mode.

Builds what the workspace lacks (the catalog-only default LM, a retrieval store), retrieves the
prompt material of ``--users`` users once (timed separately), then times
:meth:`Generator.rank` per mode -- prompt rendering, tokenisation and the model -- after one
warm-up batch. With tuned adapters in the workspace the users' shard adapters are used. One JSON
line per mode on stdout.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from llmrec.llm.generator import MODES


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", default="llmrec-workspace")
    p.add_argument("--users", type=int, default=64, help="users ranked per mode")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--top-k", type=int, default=10, help="items written in json/constrained")
    p.add_argument("--model", help="hub id or folder (default: the workspace's built LM)")
    p.add_argument("--no-adapters", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=2020)


def run(args: argparse.Namespace) -> int:
    """Users/second of the CRAGRU generator per mode (default model, CPU)."""
    from llmrec.errors import ArtifactError
    from llmrec.llm.lm_builder import build_lm
    from llmrec.pipelines.cragru import CragruOptions, CragruPipeline, default_lm_dir
    from llmrec.workspace import Workspace
    from retrieval.store import RetrievalStore

    ws = Workspace(args.workspace)
    if args.model is None and not (default_lm_dir(ws) / "config.json").is_file():
        build_lm(ws.dataset, default_lm_dir(ws), seed=args.seed, device=args.device)
    try:
        store = RetrievalStore.load(ws)
    except ArtifactError:
        store = RetrievalStore.build(ws, encoder="text", seed=args.seed)
    pipe = CragruPipeline(
        ws,
        CragruOptions(
            model=args.model,
            adapters=not args.no_adapters,
            batch_size=args.batch_size,
            top_k=args.top_k,
            device=args.device,
        ),
        store=store,
    )
    rng = np.random.default_rng(args.seed)
    alive = np.flatnonzero(~pipe.view.forgotten_users)
    users = np.sort(rng.choice(alive, size=min(args.users, len(alive)), replace=False))
    t0 = time.perf_counter()
    ctxs = [pipe.context(int(u)) for u in users]
    retrieve_s = time.perf_counter() - t0
    for mode in [m for m in args.modes.split(",") if m]:
        pipe.recommend(users[: args.batch_size], mode, contexts=ctxs[: args.batch_size])
        t0 = time.perf_counter()
        out = pipe.recommend(users, mode, contexts=ctxs)
        sec = time.perf_counter() - t0
        rec = {
            "bench": "llm",
            "mode": mode,
            "users": len(users),
            "seconds": round(sec, 3),
            "users_per_second": round(len(users) / sec, 2),
            "retrieve_users_per_second": round(len(users) / retrieve_s, 2),
            "batch_size": args.batch_size,
            "top_k": args.top_k,
            "fallbacks": int(sum(r.fallback for r in out)),
            "adapters": bool(pipe.adapter_config),
            "model": args.model or str(default_lm_dir(ws)),
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
        }
        print(json.dumps(rec), flush=True)
    return 0


SUBCOMMANDS = {"llm": (configure, run)}
