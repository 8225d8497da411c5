"""The CRAGRU paper's protocol beside the toolkit's, on one run (``scripts/cragru_protocols.py``).

Two workspaces under one root hold the same dataset and split; the same random share of users
(default 10%) is the forget set in both.

* ``toolkit`` (leak-free): the forget users' TRAIN interactions are forgotten through the ledger;
  candidates come from a source at the retained version (its retained train items blocked);
  prompt history is the retained train part; rankings are scored with RecBole's protocol on the
  retained test part (retained train + valid masked, the list first, then the source's order),
  averaged over the served users with a test item.
* ``paper`` (the reference implementation's accounting, see ``docs/cragru_reference.md``): the
  forget users lose every interaction but their first one; candidates are blocked on the FULL
  data's train + valid items; the prompt history comes from a second random 8:1:1 split of the
  retained data (its train part: the full split's test items can be in the prompt); the
  ranked list (top ``list_len`` = 20) is scored against the FULL data's test split; users that are
  not served (history <= 2 items: the forget users) or whose list has fewer than ``list_len``
  items count 0 in the average over all users; Retrain is trained and scored on the retained
  data's own split (its own users).

Candidate sources (:mod:`retrieval.sources`): ``<model>-original`` (trained before the request;
includes forgotten data), ``<model>`` (retrained by the forget stage, exact) and ``ease``. For
each source and protocol: the candidate order alone and, optionally, the LLM's ranking of it
(the Hugging Face serving backend, :mod:`llmrec.llm.backends.hf`, on the workspace's catalogue LM, likelihood mode by
default). History selection: any of :data:`retrieval.strategies.ALL_STRATEGIES` for users with
more than ``H`` items (default ``dp``, its per-cluster ratios chosen by the knapsack over a
VALID utility table: the store's EASE generator re-ranking the candidates from the selected
history, Hit@10 on the protocol's VALID part). The leaky - exact difference (per user, same
users) is reported with a paired t-test and a Wilcoxon test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from llmrec.data.split import TEST, TRAIN, VALID, _group_counts
from llmrec.evaluation.metrics import ranking_metrics
from llmrec.io import atomic_write_json
from llmrec.workspace import Workspace

PROTOCOLS = ("toolkit", "paper")
#: the prior weights the paper protocol searches on VALID: a coarser subset of the served
#: blend's grid (:data:`llmrec.serving.cragru.BLEND_GRID`), kept so its figures stay comparable
PAPER_BLEND_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

#: Table II of the paper (ml-100k, HR@10 / NDCG@10), as typed in its t-test script.
TABLE_II = {
    "bpr": {"cragru": (0.7116, 0.2801), "retrain": (0.7845, 0.2910)},
    "lightgcn": {"cragru": (0.6384, 0.2156), "retrain": (0.7739, 0.2790)},
}


@dataclass
class ProtocolConfig:
    """One side-by-side run. ``k``: item clusters; ``H``: history budget (reference: 5, 100).
    ``blend``: weight of the candidate-rank prior added to the LM's log-likelihood (``None``:
    tuned on VALID with the exact source, per protocol; 0: the pure LM ranking). ``lm_init``:
    starting point of the catalogue LM built when ``lm`` is not given (``scratch``: the GPT-2
    with 512 positions, which holds the paper's 50-candidate prompt; ``minilm`` takes 232)."""

    fraction: float = 0.1
    model: str = "bpr"
    n_candidates: int = 50
    list_len: int = 20
    H: int = 100
    k: int = 5
    strategy: str = "dp"
    llm: bool = False
    mode: str = "likelihood"
    llm_users: int | None = None
    batch_size: int = 16
    seed: int = 2020
    cf_params: dict = field(default_factory=dict)
    encoder: str = "text"
    device: str = "cpu"
    lm: str | None = None
    lm_init: str = "scratch"
    blend: float | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return (f"{self.model}-original", self.model, "ease")


# ---------------------------------------------------------------------------- forget splits
def forget_users(n_users: int, fraction: float, seed: int) -> np.ndarray:
    """``int(fraction * n_users)`` users at random (the reference's ``random.sample`` share)."""
    n = int(n_users * fraction)
    return np.sort(np.random.default_rng(seed).choice(n_users, size=n, replace=False))


def all_but_one(ds, users: np.ndarray) -> np.ndarray:
    """Interaction indices of ``users`` except each user's first one in file order."""
    idx = np.flatnonzero(np.isin(ds.inter_user, users))
    first = np.unique(ds.inter_user[idx], return_index=True)[1]
    return np.delete(idx, first)


def resplit(ds, keep: np.ndarray, seed: int, ratios=(0.8, 0.1, 0.1)) -> np.ndarray:
    """A fresh per-user random 8:1:1 split (RecBole rounding) of the kept interactions:
    part per interaction (TRAIN/VALID/TEST), -1 where not kept."""
    idx = np.flatnonzero(keep)
    rng = np.random.default_rng(seed)
    order = idx[np.lexsort((rng.random(len(idx)), ds.inter_user[idx]))]
    users = ds.inter_user[order]
    n = np.bincount(users, minlength=ds.n_users)
    counts = _group_counts(tuple(ratios), n)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    rank = np.arange(len(order)) - start[users]
    b1 = counts[users, 0]
    b2 = b1 + counts[users, 1]
    part = np.full(ds.n_inter, -1, dtype=np.int8)
    part[order] = np.where(rank < b1, TRAIN, np.where(rank < b2, VALID, TEST))
    return part


def _by_user(n_users: int, users: np.ndarray, items: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(users, kind="stable")
    ptr = np.searchsorted(users[order], np.arange(n_users + 1))
    return [items[order[ptr[u] : ptr[u + 1]]] for u in range(n_users)]


# ---------------------------------------------------------------------------- scoring
def list_metrics(
    lists: dict[int, np.ndarray], truth: list[np.ndarray], users: np.ndarray, list_len: int
) -> dict[str, np.ndarray]:
    """Per-user HR@10 / NDCG@10 of ranked lists against ``truth`` (the paper's accounting:
    a user without a list or with fewer than ``list_len`` items scores 0)."""
    hit = np.zeros(len(users))
    ndcg = np.zeros(len(users))
    rows, npos, where = [], [], []
    for r, u in enumerate(users):
        lst = lists.get(int(u))
        if lst is None or len(lst) < list_len or not len(truth[u]):
            continue
        hits = np.zeros(10, dtype=bool)
        top = np.asarray(lst)[:10]
        hits[: len(top)] = np.isin(top, truth[u])
        rows.append(hits)
        npos.append(len(truth[u]))
        where.append(r)
    if rows:
        m = ranking_metrics(np.array(rows), np.array(npos), ks=(10,))
        hit[where], ndcg[where] = m["hit@10"], m["ndcg@10"]
    return {"hit@10": hit, "ndcg@10": ndcg}


def toolkit_metrics(data, base: np.ndarray, lists: dict[int, np.ndarray], users: np.ndarray):
    """RecBole protocol on the retained test part: each list first, then ``base`` order."""
    from llmrec.evaluation import evaluate_model

    row = {int(u): r for r, u in enumerate(users)}

    def fn(batch: np.ndarray) -> np.ndarray:
        out = np.empty((len(batch), base.shape[1]))
        for j, u in enumerate(batch):
            b = base[row[int(u)]]
            s = np.where(np.isfinite(b), -2.0 + 1e-9 * np.argsort(np.argsort(b)), -1e12)
            lst = lists.get(int(u), np.zeros(0, np.int64))
            s[lst] = 1e6 - np.arange(len(lst))
            out[j] = s
        return out

    res = evaluate_model(None, data, "test", users, ks=(10,), score_fn=fn, return_per_user=True)
    pu = res["per_user"]
    return np.asarray(pu["users"]), {m: np.asarray(pu[m]) for m in ("hit@10", "ndcg@10")}


# ---------------------------------------------------------------------------- one protocol
@dataclass
class _Side:
    """Everything one protocol needs: workspace, store, sources, histories, VALID, truth."""

    name: str
    ws: Workspace
    store: Any
    sources: dict
    history: list[np.ndarray]
    ratings: list[np.ndarray]
    valid: list[np.ndarray]
    blocked: sp.csr_matrix | None
    served: np.ndarray
    forget: np.ndarray
    resplit: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def _prepare(
    root: Path, name: str, ws_kw: dict, cfg: ProtocolConfig, say: Callable[[str], None]
) -> _Side:
    from llmrec.data.requests import interactions_request
    from llmrec.forget.runner import forget
    from retrieval import sources as src_mod
    from retrieval.store import RetrievalStore

    ws = Workspace(root / name, **ws_kw)
    ds, split = ws.dataset, ws.split
    if ws.ledger_path.exists():
        with ws.ledger() as led:
            if led.version:
                raise ValueError(f"{ws.root} already holds forget requests: use a fresh root")
    t0 = time.perf_counter()
    RetrievalStore.build(
        ws,
        encoder=cfg.encoder,
        n_candidates=cfg.n_candidates,
        seed=cfg.seed,
        n_clusters=cfg.k,
        cache_dir=root / "embeddings",
    )
    info: dict[str, Any] = {"store_build_s": time.perf_counter() - t0}
    for s in cfg.sources:  # before the request: the originals stay as they are now
        if s != "ease":
            info[f"{s}_build_s"] = src_mod.build_source(
                ws, s, seed=cfg.seed, params=cfg.cf_params
            ).cost_s
    users = forget_users(ds.n_users, cfg.fraction, cfg.seed)
    if name == "paper":
        idx = all_but_one(ds, users)
    else:
        idx = np.flatnonzero(np.isin(ds.inter_user, users) & (split.part == TRAIN))
    t0 = time.perf_counter()
    applied = forget(ws, [interactions_request(ds, idx)])
    info["forget_s"] = time.perf_counter() - t0
    info["forget_stages"] = applied.get("stages", {})
    info["forget_users"] = int(len(users))
    info["forgotten_interactions"] = int(len(idx))
    say(f"[{name}] forgot {len(idx)} interactions of {len(users)} users")
    store = RetrievalStore.load(ws)
    srcs = {s: src_mod.load_source(ws, s) for s in cfg.sources}
    view = ws.view()
    if name == "paper":
        part = resplit(ds, view.keep, cfg.seed + 1)
        tr = part == TRAIN
        history = _by_user(ds.n_users, ds.inter_user[tr], np.flatnonzero(tr))
        valid = _by_user(ds.n_users, ds.inter_user[part == VALID], ds.inter_item[part == VALID])
        full = (split.part == TRAIN) | (split.part == VALID)
        blocked = sp.csr_matrix(
            (np.ones(int(full.sum())), (ds.inter_user[full], ds.inter_item[full])),
            shape=(ds.n_users, ds.n_items),
        )
    else:
        m = split.mask(TRAIN, view.keep)
        history = _by_user(ds.n_users, ds.inter_user[m], np.flatnonzero(m))
        mv = split.mask(VALID, view.keep)
        valid = _by_user(ds.n_users, ds.inter_user[mv], ds.inter_item[mv])
        blocked, part = None, None
    # chronological prompt histories: item indices and ratings
    ts = ds.timestamp if ds.timestamp is not None else np.arange(ds.n_inter, dtype=float)
    items, ratings = [], []
    for h in history:
        h = h[np.lexsort((h, ts[h]))]
        items.append(ds.inter_item[h].astype(np.int64))
        ratings.append(ds.rating[h] if ds.rating is not None else np.ones(len(h)))
    alive = ~view.forgotten_users
    if name == "paper":  # the reference serves users with more than two history lines
        served = np.flatnonzero(alive & (np.array([len(h) for h in items]) > 2))
    else:
        served = np.flatnonzero(alive)
    return _Side(name, ws, store, srcs, items, ratings, valid, blocked, served, users, part, info)


def _candidates(side: _Side, src, users: np.ndarray, n: int) -> np.ndarray:
    blocked = side.blocked[users] if side.blocked is not None else None
    return src.candidates(users, n, blocked=blocked)


def _ratios(side: _Side, cands: np.ndarray, users: np.ndarray, cfg: ProtocolConfig):
    """The dp strategy's per-cluster ratios: knapsack over a VALID utility table."""
    from retrieval import strategies as st
    from retrieval.candidates import user_rows

    big = [r for r, u in enumerate(users) if len(side.history[u]) > cfg.H]
    if not big:
        return np.full(cfg.k, 1.0 / cfg.k), None
    labels = side.store.clusters.labels
    hist = [side.history[users[r]] for r in big]
    gen, n_items = side.store.cooccurrence, side.ws.dataset.n_items

    def score_rows(selections):
        return gen.scores(user_rows(n_items, [np.unique(s) for s in selections]))

    util = st.hit_utility(
        score_rows,
        [cands[r][cands[r] >= 0] for r in big],
        [side.valid[users[r]] for r in big],
    )
    table = st.ratio_table(hist, [labels[h] for h in hist], util, cfg.H, cfg.k, cfg.seed)
    ratios, best = st.knapsack_ratios(table)
    return ratios, {"table_valid_hit@10": table.round(4).tolist(), "utility": best}


def _select_histories(side: _Side, users, cands, ratios, cfg: ProtocolConfig):
    from retrieval import strategies as st

    vecs = side.store.item_embeddings.astype(np.float64)
    norm = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = vecs / np.where(norm > 0, norm, 1.0)
    labels = side.store.clusters.labels
    out_items, out_ratings = [], []
    for r, u in enumerate(users):
        items, rt = side.history[u], side.ratings[u]
        if len(items) > cfg.H:
            c = cands[r][cands[r] >= 0]
            pos = st.select(
                cfg.strategy,
                history_vectors=vecs[items],
                history_clusters=labels[items],
                ratings=rt,
                candidate_vectors=vecs[c],
                H=cfg.H,
                seed=cfg.seed,
                user=int(u),
                ratios=ratios,
            )
            items, rt = items[pos], rt[pos]
        out_items.append(items)
        out_ratings.append(rt)
    return out_items, out_ratings


def _run_side(side: _Side, cfg: ProtocolConfig, backend, say) -> dict[str, Any]:
    from llmrec.llm.backends import checked_rank
    from llmrec.llm.prompt import UserContext
    from llmrec.models.training import retained_data

    ds = side.ws.dataset
    view = side.ws.view()
    data = retained_data(side.ws, view)
    if side.name == "paper":
        users = np.arange(ds.n_users)
        tm = side.ws.split.part == TEST
        truth = _by_user(ds.n_users, ds.inter_user[tm], ds.inter_item[tm])
    else:
        has_test = np.zeros(ds.n_users, bool)
        has_test[data.test[0]] = True
        users = np.flatnonzero(has_test & ~view.forgotten_users)
    served = np.intersect1d(users, side.served)
    llm_users = served if cfg.llm_users is None else served[: cfg.llm_users]
    out: dict[str, Any] = {"per_user": {}, "sources": {}, "timings_s": {}}
    ratios = None
    if cfg.strategy == "dp":  # fitted once per protocol, on VALID, with the exact CF source
        t0 = time.perf_counter()
        exact = side.sources[cfg.model]
        ratios, dp_info = _ratios(
            side, _candidates(side, exact, served, cfg.n_candidates), served, cfg
        )
        out["dp"] = {"ratios": ratios.tolist(), "fitted_with": cfg.model, **(dp_info or {})}
        out["timings_s"]["dp_ratios"] = time.perf_counter() - t0
    cands_of, ranked_of = {}, {}
    sel = np.isin(served, llm_users)
    for sname, src in side.sources.items():
        t0 = time.perf_counter()
        cands_of[sname] = cands = _candidates(side, src, served, cfg.n_candidates)
        if backend is not None:
            h_items, h_ratings = _select_histories(side, served[sel], cands[sel], ratios, cfg)
            ctxs = [
                UserContext(int(u), view.visible_attributes(int(u)), hi, hr, c[c >= 0])
                for u, c, hi, hr in zip(served[sel], cands[sel], h_items, h_ratings)
            ]
            ranked_of[sname] = (
                ctxs,
                checked_rank(backend, ctxs, cfg.mode, forgotten=view.forgotten_items),
            )
            if side.name == "paper":
                leaked = sum(
                    bool(np.isin(hi, truth[int(u)]).any()) for u, hi in zip(served[sel], h_items)
                )
                out.setdefault("test_items_in_prompt_users", {})[sname] = int(leaked)
            say(f"[{side.name}] llm over {sname}: {len(ctxs)} users")
        out["timings_s"][sname] = time.perf_counter() - t0
    weight = cfg.blend
    if backend is not None and weight is None:
        weight, out["blend"] = _tune_blend(side, *ranked_of[cfg.model], cfg)
    for sname, src in side.sources.items():
        cands = cands_of[sname]
        methods = {
            f"candidates[{sname}]": {
                int(u): c[c >= 0][: cfg.list_len] for u, c in zip(served, cands)
            }
        }
        if backend is not None:
            methods[f"llm[{sname}]"] = _llm_lists(*ranked_of[sname], weight, cfg.list_len)
        base = None
        for mname, lst in methods.items():
            if side.name == "paper":
                out["per_user"][mname] = (users, list_metrics(lst, truth, users, cfg.list_len))
            else:
                if base is None:
                    base = src.scores(users)
                out["per_user"][mname] = toolkit_metrics(data, base, lst, users)
        out["sources"][sname] = src.describe()
    out["blend_weight"] = weight
    out["retrain"] = _retrain(side, cfg, data, users)
    out["users"] = int(len(users))
    out["served"] = int(len(served))
    out["users_over_H"] = int(sum(len(side.history[u]) > cfg.H for u in served))
    out["llm_users"] = int(len(llm_users)) if backend is not None else 0
    return out


def _llm_lists(ctxs, ranked, weight: float | None, list_len: int) -> dict[int, np.ndarray]:
    """Each user's list: the LM ranking (re-sorted with ``weight`` times the candidate-rank
    prior, likelihood mode), or the candidate order where generation failed (the reference's
    fallback)."""
    from llmrec.serving.cragru import blend_ranking

    out = {}
    for r, c in zip(ranked, ctxs):
        if r.fallback:
            out[r.user] = c.candidates[:list_len]
        else:
            out[r.user] = blend_ranking(r, c.candidates, float(weight or 0.0)).items[:list_len]
    return out


def _tune_blend(side: _Side, ctxs, ranked, cfg: ProtocolConfig) -> tuple[float, dict]:
    """The prior weight with the best VALID NDCG@10 of the exact source's LLM lists (the
    protocol's VALID part: retained valid, or the re-split's valid for the paper)."""
    from llmrec.serving.cragru import choose_blend

    users = np.array([c.user for c in ctxs], dtype=np.int64)
    has = np.array([len(side.valid[u]) > 0 for u in users], dtype=bool)

    def valid_ndcg(w: float) -> float:
        lists = _llm_lists(ctxs, ranked, w, cfg.list_len)
        return float(list_metrics(lists, side.valid, users[has], 1)["ndcg@10"].mean())

    best, curve = choose_blend(valid_ndcg, PAPER_BLEND_GRID)
    return best, {"tuned_on": "valid ndcg@10", "fitted_with": cfg.model, "curve": curve}


def _retrain(side: _Side, cfg: ProtocolConfig, data, users) -> dict[str, Any]:
    """Retrain on the toolkit's retained split, or (paper) on the retained data's own split."""
    from llmrec.data.parts import RetainedData, part_pairs
    from llmrec.evaluation import evaluate_model
    from llmrec.models.training import train_model

    t0 = time.perf_counter()
    ds = side.ws.dataset
    if side.name == "paper":
        own = RetainedData(
            data.view, *(part_pairs(ds, side.resplit, p) for p in (TRAIN, VALID, TEST))
        )
        model = train_model(
            side.ws, cfg.model, seed=cfg.seed, data=own, early_stop=True, **cfg.cf_params
        )
        res = evaluate_model(model, own, "test", ks=(10,), return_per_user=True)
    else:
        model = train_model(side.ws, cfg.model, seed=cfg.seed, data=data, **cfg.cf_params)
        res = evaluate_model(model, data, "test", users, ks=(10,), return_per_user=True)
    pu = res["per_user"]
    return {
        "hit@10": float(res["hit@10"]),
        "ndcg@10": float(res["ndcg@10"]),
        "n_users": int(res["n_users"]),
        "per_user_users": np.asarray(pu["users"]),
        "per_user": {m: np.asarray(pu[m]) for m in ("hit@10", "ndcg@10")},
        "seconds": time.perf_counter() - t0,
        "split": "retained data's own 8:1:1 split" if side.name == "paper" else "workspace",
    }


def _summary(per_user: dict, leaky: str, exact: str, forget: np.ndarray) -> dict[str, Any]:
    """Mean HR/NDCG@10 per method and the paired leaky - exact differences, over all scored
    users and over the forget users alone."""
    from llmrec.evaluation.paired import paired_difference

    rows = {
        m: {
            "hit@10": float(v["hit@10"].mean()),
            "ndcg@10": float(v["ndcg@10"].mean()),
            "n_users": int(len(u)),
        }
        for m, (u, v) in per_user.items()
    }
    paired: dict[str, dict] = {"all": {}, "forget users": {}}
    for kind in ("candidates", "llm"):
        a, b = f"{kind}[{leaky}]", f"{kind}[{exact}]"
        if a in per_user and b in per_user:
            (ua, va), (ub, vb) = per_user[a], per_user[b]
            if not np.array_equal(ua, ub):
                raise RuntimeError(f"{a} and {b} were scored on different users")
            for group, keep in (("all", slice(None)), ("forget users", np.isin(ua, forget))):
                paired[group][f"{kind}: {leaky} - {exact}"] = {
                    m: paired_difference(va[m][keep], vb[m][keep]) for m in ("hit@10", "ndcg@10")
                }
    return {"methods": rows, "paired_leaky_minus_exact": paired}


def run_protocols(
    root: str | Path,
    cfg: ProtocolConfig | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build both workspaces under ``root``, forget, rank and score; returns the results and
    writes ``ROOT/toolkit/runs/cragru-protocols-TIME/results.json``."""
    cfg = cfg or ProtocolConfig()
    say = progress or (lambda m: None)
    root = Path(root)
    ws_kw = {"dataset": dataset, "data_dir": data_dir}
    t_all = time.perf_counter()
    sides = {p: _prepare(root, p, ws_kw, cfg, say) for p in PROTOCOLS}
    backend = None
    if cfg.llm:
        backend = _backend(sides["toolkit"].ws, cfg, say)
    results: dict[str, Any] = {"config": asdict(cfg), "protocols": {}}
    for p, side in sides.items():
        got = _run_side(side, cfg, backend, say)
        rt = got.pop("retrain")
        summ = _summary(got.pop("per_user"), cfg.sources[0], cfg.sources[1], side.forget)
        summ["methods"][f"retrain[{cfg.model}]"] = {
            k: rt[k] for k in ("hit@10", "ndcg@10", "n_users")
        }
        results["protocols"][p] = {
            **summ,
            **got,
            "retrain": {k: v for k, v in rt.items() if not k.startswith("per_user")},
            "setup": side.info,
        }
    results["table_ii"] = TABLE_II.get(cfg.model)
    results["leak_note"] = f"{cfg.sources[0]}: includes forgotten data"
    results["total_s"] = time.perf_counter() - t_all
    run = sides["toolkit"].ws.new_run("cragru-protocols", {"protocols": asdict(cfg)})
    atomic_write_json(run / "results.json", results)
    results["run_dir"] = str(run)
    return results


def _backend(ws: Workspace, cfg: ProtocolConfig, say):
    """``cfg.lm``, else the toolkit workspace's catalogue-only base LM (built if missing; it
    holds no user data, so both protocols share it)."""
    from llmrec.llm.backends import BackendSpec, create_backend
    from llmrec.llm.catalog import Catalog
    from llmrec.llm.lm_builder import LMConfig, build_lm
    from llmrec.serving.cragru import default_lm_dir

    lm_dir = Path(cfg.lm) if cfg.lm else default_lm_dir(ws)
    if cfg.lm is None and not (lm_dir / "config.json").is_file():
        t0 = time.perf_counter()
        build_lm(ws.dataset, lm_dir, LMConfig(init=cfg.lm_init), seed=cfg.seed, device=cfg.device)
        say(f"build_lm: {time.perf_counter() - t0:.1f}s")
    from llmrec.llm.recipe import serving

    spec = BackendSpec(
        str(lm_dir),
        Catalog.from_dataset(ws.dataset),
        device=cfg.device,
        top_k=cfg.list_len,
        batch_size=cfg.batch_size,
        template=serving(lm_dir).template,  # the template the base LM was adapted with
    )
    return create_backend("hf", spec)


def format_protocols(res: dict[str, Any]) -> str:
    """Side-by-side table: one row per method, HR@10 / NDCG@10 under each protocol."""
    cfg = res["config"]
    tk, pp = res["protocols"]["toolkit"], res["protocols"]["paper"]
    names = list(dict.fromkeys([*tk["methods"], *pp["methods"]]))
    leaky = f"{cfg['model']}-original"
    head = f"{'method':44s} {'toolkit HR@10':>13s} {'NDCG@10':>8s} {'paper HR@10':>11s} {'NDCG@10':>8s}"
    lines = [head, "-" * len(head)]

    def cell(side, name, w):
        m = side["methods"].get(name)
        return (f"{m['hit@10']:{w}.4f} {m['ndcg@10']:8.4f}") if m else f"{'-':>{w}s} {'-':>8s}"

    for n in names:
        label = n + (" *" if leaky in n else "")
        lines.append(f"{label:44s} {cell(tk, n, 13)} {cell(pp, n, 11)}")
    t2 = res.get("table_ii")
    if t2:
        for k, lab in (
            ("cragru", "Table II CRAGRU (paper)"),
            ("retrain", "Table II Retrain (paper)"),
        ):
            hr, nd = t2[k]
            lines.append(f"{lab:44s} {'':>13s} {'':>8s} {hr:11.4f} {nd:8.4f}")
    lines.append(f"* {res['leak_note']} (trained before the forget request, never updated)")
    for pname, side in (("toolkit", tk), ("paper", pp)):
        for group, diffs in side["paired_leaky_minus_exact"].items():
            for key, d in diffs.items():
                for m in ("hit@10", "ndcg@10"):
                    x = d[m]
                    lines.append(
                        f"[{pname}, {group}] {key} {m.upper()}: {x['mean_diff']:+.4f} +- "
                        f"{x['std_err']:.4f} (s.e., {x['n_users']} users; paired t "
                        f"p={x['t_p_value']:.3g}, Wilcoxon p={x['wilcoxon_p_value']:.3g})"
                    )
        leak = side.get("test_items_in_prompt_users")
        if leak:
            n = max(leak.values())
            lines.append(
                f"[{pname}] prompts holding one of the user's test items: {n} of "
                f"{side['llm_users']} LLM users (history from the re-split)"
            )
        if side.get("blend_weight") is not None:
            lines.append(f"[{pname}] LLM prior blend weight: {side['blend_weight']:g}")
        if side.get("dp"):
            r = ", ".join(f"{x:.2f}" for x in side["dp"]["ratios"])
            lines.append(f"[{pname}] dp ratios fitted on VALID: [{r}]")
        rt = side["retrain"]
        lines.append(
            f"[{pname}] retrain on {rt['split']}: {rt['n_users']} users; served "
            f"{side['served']} of {side['users']} scored users, "
            f"{side['users_over_H']} with more than H={cfg['H']} history items"
        )
    lines.append(f"total {res['total_s']:.0f}s")
    return "\n".join(lines)
