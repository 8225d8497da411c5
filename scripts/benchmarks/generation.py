"""``scripts/bench.py llm``: regeneration throughput (users per second) for each mode.

Builds what the workspace lacks (the catalog-only default LM, a retrieval store), retrieves the
prompt material of ``--users`` users once (timed separately), then times
:meth:`HFBackend.rank` per mode -- prompt rendering, tokenisation and the model -- after one
warm-up batch. With tuned adapters in the workspace the users' shard adapters are used. One JSON
line per mode on stdout.

``--levers``: the CPU serving options of the Hugging Face backend side by side in one run, on
the same users and mode(s): the default (fp32), ``int8`` (dynamic quantisation of the Linear
layers), ``prefix`` (the instruction prefix's KV cache reused) and ``memo`` (the prompt-hash
memo: a cold pass, a warm pass, and a pass after 10% of the users lost their first history item
as a forget would take it). Per variant (the median of ``--repeats`` timed runs; the memo's
passes once each): users/s, prompt tokens/s read by the model, and the
agreement of its rankings with fp32 (identical lists, same top-1, mean top-10 overlap).

``--kv-ratio``: likelihood scoring of 50 multi-token candidates after a 512-token prompt on a
tiny random Llama (built in a temporary folder, tokenizer trained locally), users/second with
the prompt's KV cache reused for every candidate and with the prompt recomputed per candidate,
and their ratio, from one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from llmrec.llm.backends import MODES

from .common import emit


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workspace",
        default="llmrec-workspace",
        help="workspace with a built LM and retrieval store",
    )
    p.add_argument("--users", type=int, default=64, help="users ranked per mode")
    p.add_argument("--batch-size", type=int, default=32, help="users per generation batch")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated generation modes")
    p.add_argument("--top-k", type=int, default=10, help="items written in json/constrained")
    p.add_argument("--model", help="hub id or folder (default: the workspace's built LM)")
    p.add_argument("--no-adapters", action="store_true", help="serve the base LM without adapters")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=2020, help="random seed")
    p.add_argument("--repeats", type=int, default=3, help="with --levers: timed runs (median)")
    p.add_argument(
        "--history", type=int, help="history items offered to the prompt (default: the recipe's)"
    )
    p.add_argument("--candidates", type=int, help="candidates per user (default: the recipe's)")
    p.add_argument(
        "--variants",
        default="fp32,int8,prefix,memo,int8+prefix+memo",
        help="with --levers: the variants to run (fp32 always runs: it is the reference)",
    )
    p.add_argument(
        "--levers",
        action="store_true",
        help="fp32 vs int8 vs prefix KV cache vs prompt-hash memo, side by side (see module doc)",
    )
    p.add_argument(
        "--kv-ratio",
        action="store_true",
        help="tiny-Llama likelihood scoring, KV-cache reuse vs recomputation (no workspace)",
    )
    p.add_argument("--prompt-tokens", type=int, default=512, help="with --kv-ratio")
    p.add_argument("--n-candidates", type=int, default=50, help="with --kv-ratio")
    p.add_argument("--hidden", type=int, default=128, help="with --kv-ratio: model width")


def kv_ratio(args: argparse.Namespace) -> dict:
    """Users/second of likelihood scoring with and without KV-cache reuse (see module doc)."""
    import tempfile
    from pathlib import Path

    import yaml

    from llmrec.data.synthetic import SyntheticSpec, write_synthetic
    from llmrec.llm.backends.hf import HFBackend
    from llmrec.llm.catalog import Catalog
    from llmrec.llm.prompt import UserContext
    from llmrec.llm.tiny_models import build_tiny, catalog_corpus_text
    from llmrec.workspace import Workspace
    from prompts import load_template

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_synthetic(
            SyntheticSpec(4000, users=40, items=400, seed=args.seed), root / "data", "syn"
        )
        ws = Workspace(root / "ws", dataset="syn", data_dir=data)
        cat = Catalog.from_dataset(ws.dataset)
        tpl = load_template("cragru")
        fields = {f: getattr(tpl, f) for f in ("system", "profile", "history", "instruction")}
        fields |= {
            "name": "bench-kv",
            "history_item": tpl.history_item,
            "candidates": "Candidate ids: {items}",
            "candidate_item": "{item}",
            "candidate_separator": ", ",
            "answer_lead": tpl.answer_lead,
        }
        (root / "bench-kv.yaml").write_text(yaml.safe_dump(fields))
        reserve = 64
        model_dir = build_tiny(
            "llama",
            root / "llama",
            catalog_corpus_text(cat),
            positions=args.prompt_tokens + reserve,
            hidden=args.hidden,
            vocab_size=2000,
            seed=args.seed,
        )
        gen = HFBackend.from_pretrained(
            model_dir, cat, template=str(root / "bench-kv.yaml"), device=args.device
        )
        gen.builder._reserve = reserve  # the prompt takes exactly the positions left
        ds = ws.dataset
        rng = np.random.default_rng(args.seed)
        ctxs = []
        for u in range(min(args.users, ds.n_users)):
            items = ds.inter_item[ds.inter_user == u]
            hist = np.concatenate([items, rng.permutation(ds.n_items)])[: 4 * args.prompt_tokens]
            pool = np.setdiff1d(np.arange(ds.n_items), items)
            ctxs.append(
                UserContext(
                    u, {"age": "25"}, hist, np.full(len(hist), 4.0),
                    rng.permutation(pool)[: args.n_candidates],
                )
            )  # fmt: skip
        enc = gen.builder.encode(ctxs[0])
        tails = gen.builder.continuations(
            enc, [gen.verbalizer(int(i)) + '"' for i in ctxs[0].candidates]
        )[1]
        out = {"bench": "llm-kv", "prompt_tokens": len(enc.ids), "users": len(ctxs)}
        out["candidate_tokens_mean"] = float(np.mean([len(t) for t in tails]))
        with torch.no_grad():
            for kv in (True, False):
                gen.kv_cache = kv
                gen.rank(ctxs[:1], "likelihood")  # warm-up
                t0 = time.perf_counter()
                ranked = gen.rank(ctxs, "likelihood")
                sec = time.perf_counter() - t0
                out[f"{'kv' if kv else 'recompute'}_users_per_second"] = round(len(ctxs) / sec, 3)
                out[f"{'kv' if kv else 'recompute'}_top1"] = [int(r.items[0]) for r in ranked]
        out["same_rankings"] = out.pop("kv_top1") == out.pop("recompute_top1")
        out["ratio"] = round(out["kv_users_per_second"] / out["recompute_users_per_second"], 2)
        out |= {
            "model": f"llama hidden={args.hidden} layers=2",
            "n_candidates": args.n_candidates,
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
        }
        return out


def run(args: argparse.Namespace) -> int:
    """Users/second of the CRAGRU serving backend per mode (default model, CPU)."""
    if args.kv_ratio:
        emit(kv_ratio(args))
        return 0
    from llmrec.errors import ArtifactError
    from llmrec.llm.lm_builder import build_lm
    from llmrec.serving.cragru import CragruOptions, CragruPipeline, default_lm_dir
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
            history=args.history,
            n_candidates=args.candidates,
        ),
        store=store,
    )
    if args.levers:
        return levers(args, ws, store, pipe)
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
        emit(rec)
    return 0


def _agreement(ref: list, got: list) -> dict:
    """How far ``got`` rankings agree with ``ref`` (same users, same order)."""
    same = [np.array_equal(a.items, b.items) for a, b in zip(ref, got)]
    top1 = [len(a.items) and len(b.items) and a.items[0] == b.items[0] for a, b in zip(ref, got)]
    overlap = [
        len(set(a.items[:10].tolist()) & set(b.items[:10].tolist())) / max(1, min(10, len(a.items)))
        for a, b in zip(ref, got)
    ]
    return {
        "identical_rankings": round(float(np.mean(same)), 4),
        "same_top1": round(float(np.mean(top1)), 4),
        "top10_overlap": round(float(np.mean(overlap)), 4),
    }


def levers(args: argparse.Namespace, ws, store, base_pipe) -> int:
    """The CPU serving options side by side (see module doc)."""
    from dataclasses import replace

    from llmrec.llm.backends.memo import RankMemo
    from llmrec.serving.cragru import CragruPipeline

    rng = np.random.default_rng(args.seed)
    alive = np.flatnonzero(~base_pipe.view.forgotten_users)
    users = np.sort(rng.choice(alive, size=min(args.users, len(alive)), replace=False))
    before = [base_pipe.context(int(u)) for u in users]
    after = list(before)
    for k in rng.choice(len(users), size=max(1, len(users) // 10), replace=False):
        c = before[k]  # as a forget of the user's first history item leaves the prompt
        ratings = None if c.history_ratings is None else c.history_ratings[1:]
        after[k] = replace(c, history_items=c.history_items[1:], history_ratings=ratings)
    variants = {
        "fp32": {},
        "int8": {"quantize": "int8"},
        "prefix": {"prefix_cache": True},
        "memo": {"memo": RankMemo()},
        "int8+prefix+memo": {"quantize": "int8", "prefix_cache": True, "memo": RankMemo()},
    }
    wanted = {"fp32", *args.variants.split(",")}
    variants = {k: v for k, v in variants.items() if k in wanted}
    modes = [m for m in args.modes.split(",") if m]
    ref: dict[tuple[str, str], list] = {}
    rows: list[dict] = []
    for name, opts in variants.items():
        t0 = time.perf_counter()
        pipe = CragruPipeline(ws, replace(base_pipe.opt, backend_options=opts), store=store)
        load_s = time.perf_counter() - t0
        b = pipe.backend
        for mode in modes:
            pipe.recommend(users[: args.batch_size], mode, contexts=before[: args.batch_size])
            passes = [("", "before", before)]
            if "memo" in opts:
                opts["memo"].clear()  # the warm-up's answers out: the first pass is cold
                passes = [(" cold", "before", before), (" warm", "before", before)]
                passes.append((" after 10% changed", "after", after))
            elif name == "fp32" and any("memo" in v for v in variants):
                passes.append((" after 10% changed", "after", after))
            for label, state, cs in passes:
                tok0, hits0 = b.stats["prompt_tokens"], b.stats["memo_hits"]
                times = []
                for _ in range(1 if "memo" in opts else args.repeats):  # a memo pass changes it
                    t0 = time.perf_counter()
                    out = pipe.recommend(users, mode, contexts=cs)
                    times.append(time.perf_counter() - t0)
                sec = float(np.median(times))
                n_runs = len(times)
                row = {
                    "bench": "llm-levers",
                    "variant": name + label,
                    "mode": mode,
                    "users": len(users),
                    "seconds": round(sec, 3),
                    "users_per_second": round(len(users) / sec, 4),
                    "model_prompt_tokens_per_second": round(
                        (b.stats["prompt_tokens"] - tok0) / n_runs / sec, 1
                    ),
                    "memo_hits": int(b.stats["memo_hits"] - hits0),
                    "fallbacks": int(sum(r.fallback for r in out)),
                    "timed_runs": n_runs,
                    "load_seconds": round(load_s, 2),
                    "instruction_prefix_tokens": len(b.instruction_prefix()),
                    "model": args.model or "the workspace's LM",
                    "torch_threads": torch.get_num_threads(),
                }
                if name == "fp32":
                    ref[(mode, state)] = out
                else:
                    row |= _agreement(ref[(mode, state)], out)
                rows.append(emit(row))
    print(
        f"\n{'variant':<30s}{'mode':<12s}{'users/s':>9s}{'prompt tok/s':>14s}  identical  top1  top10"
    )
    for r in rows:
        print(
            f"{r['variant']:<30s}{r['mode']:<12s}{r['users_per_second']:>9.3g}"
            f"{r['model_prompt_tokens_per_second']:>14.1f}  {r.get('identical_rankings', 1.0):>9.3f}"
            f" {r.get('same_top1', 1.0):>5.2f} {r.get('top10_overlap', 1.0):>6.2f}"
        )
    return 0


SUBCOMMANDS = {"llm": (configure, run)}
