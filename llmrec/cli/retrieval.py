"""``llmrec index build|info`` and ``llmrec retrieve``: the forget-aware retrieval layer."""

from __future__ import annotations

import argparse

import numpy as np

from llmrec.cli.common import emit, nonempty, nonneg_int, open_workspace, positive_int
from llmrec.errors import LlmrecError
from retrieval.hybrid import SOURCES as STORE_SOURCES
from retrieval.sources import SOURCES as CF_SOURCES
from retrieval.strategies import ALL_STRATEGIES

#: every candidate source: the store's lists (ease, text, hybrid: retrieval/hybrid.py) and the
#: CF sources (retrieval/sources.py)
SOURCES = (*STORE_SOURCES, *(s for s in CF_SOURCES if s not in STORE_SOURCES))

DP_NOTE = "computed from the retained data at the store's version, never stored"


def add_material_options(p: argparse.ArgumentParser, strategy: str = "preference") -> None:
    """``--strategy`` (every CRAGRU strategy and baseline, dp included) and ``--source``."""
    p.add_argument(
        "--strategy",
        choices=ALL_STRATEGIES,
        default=strategy,
        help="history selection: a CRAGRU strategy (preference, diversity, attention), a "
        "baseline (none, random, average) or dp (per-cluster shares fitted on VALID for the "
        f"call, a few seconds: {DP_NOTE})",
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="candidate source: the store's lists ease (its generator), text (the text "
        "neighbours of the retained history) or hybrid (ease's head, the new items nearest in "
        "text in its tail), or a CF source built with 'llmrec index build --source NAME' "
        "(default: the store's, set by 'index build --source')",
    )


def prompt_material(ws, store, user: int, strategy: str, source: str, H: int, n, seed: int):
    """``store.retrieve`` of ``user`` with candidates from ``source`` and, for ``dp``, shares
    fitted now; the source's leak note when it includes forgotten data (else ``None``)."""
    from retrieval.dp_ratios import fit_dp_ratios
    from retrieval.sources import LEAK_NOTE, load_source

    pick, leak = None, None
    count = n or store.config["n_candidates"]
    if source in STORE_SOURCES:
        if source != store.source:
            pick = lambda users: store.candidates(np.asarray(users), count, source=source)  # noqa: E731
    else:
        src = load_source(ws, source)
        leak = LEAK_NOTE if src.includes_forgotten_data else None
        pick = lambda users: src.candidates(np.asarray(users), count)  # noqa: E731
    ratios = None
    if strategy == "dp":
        ratios, _ = fit_dp_ratios(store, H, seed, n, candidates=pick)
    cands = None if pick is None else pick([user])[0]
    out = store.retrieve(user, strategy, H=H, n_candidates=n, ratios=ratios, candidates=cands)
    return out, leak


def register(sub, common) -> None:
    p = sub.add_parser("index", help="build and inspect the retrieval store (FAISS index etc.)")
    isub = p.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)
    b = isub.add_parser(
        "build",
        parents=[common],
        help="build every retrieval artifact from the retained data",
        description="Embed the retained items (text or CF encoder), index them in FAISS, count "
        "the co-occurrence statistics of the co-occurrence candidate model on the retained train part and "
        "cluster the items, at the ledger's newest version. Later 'llmrec forget' runs update "
        "all of it incrementally.",
    )
    b.add_argument(
        "--encoder",
        choices=["text", "cf"],
        default="text",
        help="item vectors: text (sentence-transformers on the item text, no user data) or cf "
        "(a CF model's item embeddings on the retained data)",
    )
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
        help="co-occurrence candidate model on the co-occurrence statistics: EASE (strongest) or item "
        "KNN (no matrix inverse, for very large catalogues) (default: %(default)s)",
    )
    b.add_argument(
        "--clusters", type=positive_int, default=20, help="item clusters for the strategies"
    )
    b.add_argument(
        "--source",
        choices=SOURCES,
        default="ease",
        help="candidate source: ease (the store's exactly unlearnable generator), text / "
        "hybrid (the store's text neighbours of the retained history / ease's head with the "
        "new items nearest in text in its tail: the list the store serves by default, "
        "retrieval/hybrid.py), bpr / lightgcn (a CF model built besides the store, retrained "
        "from scratch on every forget), bpr-original / lightgcn-original (the CRAGRU "
        "reference's: never updated, it keeps forgotten data and the audit says so after a "
        "forget)",
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
    add_material_options(r)
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

    ws = open_workspace(args, read_only=True)
    return ws, RetrievalStore.load(ws, args.name)


def cmd_build(args: argparse.Namespace) -> int:
    from retrieval.candidates import CooccurrenceConfig
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
            cooccurrence=CooccurrenceConfig.preset(args.generator),
            cf_params={"epochs": args.cf_epochs} if args.cf_epochs else None,
            cache_dir=args.cache_dir,
            name=args.name,
            source=args.source if args.source in STORE_SOURCES else "ease",
        )
    except ValueError as exc:
        raise LlmrecError(str(exc)) from None
    result = _info(store)
    result["seconds"] = store.build_seconds
    text = _info_text(result) + f"\n  built in {store.build_seconds:.2f}s"
    if args.source not in STORE_SOURCES:
        from retrieval.sources import LEAK_NOTE, build_source, is_leaky

        src = build_source(ws, args.source, seed=args.seed)
        result["source"] = src.describe()
        text += f"\n  candidate source {args.source}: trained in {src.cost_s:.2f}s"
        if is_leaky(args.source):
            text += f" ({LEAK_NOTE} after a forget request: the audit reports it)"
    emit(args, result, text)
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
        "candidate_source": store.source,
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
            f"  candidates {r['n_candidates']} by {r['generator']['model']} "
            f"({r['candidate_source']})  "
            f"clusters {r['n_clusters']}  seed {r['seed']}",
        ]
    )


def cmd_retrieve(args: argparse.Namespace) -> int:
    ws, store = _load(args)
    ds = ws.dataset
    user = ds.user_index(args.user)
    args.source = args.source or store.source
    out, leak = prompt_material(
        ws, store, user, args.strategy, args.source, args.H, args.candidates, args.seed
    )
    n_hist = len(store.history(user)[0])
    if args.source in STORE_SOURCES:
        scores = store.candidate_scores(np.array([user]))[0]
    else:
        from retrieval.sources import load_source

        scores = load_source(ws, args.source).scores(np.array([user]))[0]

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
        "source": args.source,
        "ledger_version": out["ledger_version"],
        "profile": profile,
        "history_total": n_hist,
        "history": history,
        "candidates": cands,
    }
    lines = [
        f"user {ds.user_tokens[user]} (ledger v{out['ledger_version']}), strategy "
        f"{args.strategy}, candidates from {args.source}: {len(history)} of {n_hist} retained "
        "history items",
        "profile: " + (", ".join(f"{k} {v}" for k, v in profile.items()) or "(none visible)"),
        "history (chronological):",
        *[f"  {h['item']:>6}  {h['text']}  [rating {h['rating']:g}]" for h in history],
        "candidates (best first):",
        *[f"  {k:>3}. {c['item']:>6}  {c['text']}" for k, c in enumerate(cands, 1)],
    ]
    if leak:
        result["note"] = f"candidate source {args.source} {leak}"
        lines.append(f"(candidate source {args.source} {leak})")
    emit(args, result, "\n".join(lines))
    return 0
