"""``llmrec index build|info`` and ``llmrec retrieve``: the forget-aware retrieval layer."""

from __future__ import annotations

import argparse

import numpy as np

from llmrec.cli.common import emit, nonempty, nonneg_int, open_workspace, positive_int
from llmrec.errors import LlmrecError


def register(sub, common) -> None:
    p = sub.add_parser("index", help="build and inspect the retrieval store (FAISS index etc.)")
    isub = p.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)
    b = isub.add_parser(
        "build",
        parents=[common],
        help="build every retrieval artifact from the retained data",
        description="Embed the retained items (text or CF encoder), index them in FAISS, count "
        "the co-occurrence statistics of the candidate generator on the retained train part and "
        "cluster the items, at the ledger's newest version. Later 'llmrec forget' runs update "
        "all of it incrementally.",
    )
    b.add_argument("--encoder", choices=["text", "cf"], default="text")
    b.add_argument(
        "--model",
        default=None,
        help="text: sentence-transformers name or path (default all-MiniLM-L6-v2, offline); "
        "cf: bpr or lightgcn (default bpr)",
    )
    b.add_argument(
        "--factory",
        type=nonempty,
        default="Flat",
        help="FAISS index-factory string, e.g. Flat, IVF64,Flat, HNSW32 (default: %(default)s)",
    )
    b.add_argument("--candidates", type=positive_int, default=50, help="candidate list length")
    b.add_argument(
        "--generator",
        choices=["ease", "knn"],
        default="ease",
        help="candidate generator on the co-occurrence statistics: EASE (strongest) or item "
        "KNN (no matrix inverse, for very large catalogues) (default: %(default)s)",
    )
    b.add_argument(
        "--clusters", type=positive_int, default=20, help="item clusters for the strategies"
    )
    b.add_argument(
        "--cf-epochs",
        type=positive_int,
        default=None,
        help="CF encoder epochs (default: model's recipe)",
    )
    b.add_argument("--cache-dir", default=None, help="embedding cache (default: in workspace)")
    b.add_argument(
        "--name", type=nonempty, default="retrieval", help="store name (default: %(default)s)"
    )
    b.set_defaults(func=cmd_build)

    i = isub.add_parser("info", parents=[common], help="what a retrieval store holds")
    i.add_argument(
        "--name", type=nonempty, default="retrieval", help="store name (default: %(default)s)"
    )
    i.set_defaults(func=cmd_info)

    r = sub.add_parser(
        "retrieve",
        parents=[common],
        help="a user's retained history chosen by a CRAGRU strategy, plus candidates",
    )
    r.add_argument("--user", required=True, help="user id (the dataset's token)")
    r.add_argument(
        "--strategy",
        # dp needs per-cluster ratios fitted on VALID (the CRAGRU reference protocol)
        choices=["preference", "diversity", "attention", "none", "random", "average"],
        default="preference",
        help="CRAGRU strategy or a reference baseline (default: %(default)s)",
    )
    r.add_argument("--H", type=nonneg_int, default=50, help="history budget (default: %(default)s)")
    r.add_argument(
        "--candidates", type=positive_int, default=None, help="candidates (default: store's)"
    )
    r.add_argument(
        "--name", type=nonempty, default="retrieval", help="store name (default: %(default)s)"
    )
    r.set_defaults(func=cmd_retrieve)


def _load(args: argparse.Namespace):
    from retrieval.store import RetrievalStore

    ws = open_workspace(args)
    return ws, RetrievalStore.load(ws, args.name)


def cmd_build(args: argparse.Namespace) -> int:
    from retrieval.candidates import GeneratorConfig
    from retrieval.store import RetrievalStore

    ws = open_workspace(args)
    try:
        store = RetrievalStore.build(
            ws,
            encoder=args.encoder,
            n_candidates=args.candidates,
            seed=args.seed,
            model=args.model,
            factory=args.factory,
            n_clusters=args.clusters,
            generator=GeneratorConfig.preset(args.generator),
            cf_params={"epochs": args.cf_epochs} if args.cf_epochs else None,
            cache_dir=args.cache_dir,
            name=args.name,
        )
    except ValueError as exc:
        raise LlmrecError(str(exc)) from None
    result = _info(store)
    result["seconds"] = store.build_seconds
    emit(args, result, _info_text(result) + f"\n  built in {store.build_seconds:.2f}s")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    _, store = _load(args)
    result = _info(store)
    emit(args, result, _info_text(result))
    return 0


def _info(store) -> dict:
    return {
        "name": store.name,
        "root": str(store.root),
        "ledger_version": store.ledger_version,
        "encoder": store.config["encoder"],
        "factory": store.index.factory,
        "dim": store.index.dim,
        "items_indexed": store.index.ntotal,
        "items_forgotten": int(store.view.forgotten_items.sum()),
        "n_candidates": store.config["n_candidates"],
        "n_clusters": store.clusters.k,
        "generator": store.config["generator"],
        "seed": store.config["seed"],
    }


def _info_text(r: dict) -> str:
    enc = r["encoder"]
    return "\n".join(
        [
            f"retrieval store {r['name']} at ledger version {r['ledger_version']} ({r['root']})",
            f"  encoder {enc['kind']} {enc['model']}  dim {r['dim']}",
            f"  index {r['factory']}: {r['items_indexed']} items "
            f"({r['items_forgotten']} forgotten items excluded)",
            f"  candidates {r['n_candidates']} by {r['generator']['model']}  "
            f"clusters {r['n_clusters']}  seed {r['seed']}",
        ]
    )


def cmd_retrieve(args: argparse.Namespace) -> int:
    ws, store = _load(args)
    ds = ws.dataset
    user = ds.user_index(args.user)
    out = store.retrieve(user, args.strategy, H=args.H, n_candidates=args.candidates)
    n_hist = len(store.history(user)[0])
    scores = store.candidate_scores(np.array([user]))[0]

    def item(i: int) -> dict:
        return {"item": str(ds.item_tokens[i]), "text": ds.item_text(int(i))}

    history = [
        {**item(i), "rating": float(r)}
        for i, r in zip(out["history_items"], out["history_ratings"])
    ]
    cands = [{**item(i), "score": float(scores[i])} for i in out["candidates"]]
    profile = {k: (v.item() if hasattr(v, "item") else v) for k, v in out["profile"].items()}
    result = {
        "user": str(ds.user_tokens[user]),
        "strategy": args.strategy,
        "ledger_version": out["ledger_version"],
        "profile": profile,
        "history_total": n_hist,
        "history": history,
        "candidates": cands,
    }
    lines = [
        f"user {ds.user_tokens[user]} (ledger v{out['ledger_version']}), strategy {args.strategy}: "
        f"{len(history)} of {n_hist} retained history items",
        "profile: " + (", ".join(f"{k} {v}" for k, v in profile.items()) or "(none visible)"),
        "history (chronological):",
        *[f"  {h['item']:>6}  {h['text']}  [rating {h['rating']:g}]" for h in history],
        "candidates (best first):",
        *[f"  {k:>3}. {c['item']:>6}  {c['text']}" for k, c in enumerate(cands, 1)],
    ]
    emit(args, result, "\n".join(lines))
    return 0
