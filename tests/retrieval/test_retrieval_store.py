"""Retrieval store on ml-100k: exact equivalence of incremental forgetting with a from-scratch
build (acceptance 1), forgotten data never served (acceptance 2), staleness and crash recovery.

The text encoder is the real all-MiniLM-L6-v2; the catalogue is encoded once per session
(:func:`shared_text_cache`) and every store reads the cache, which is sound because item text
holds no user data (``test_cache_entries_equal_fresh_encoding`` checks the entries).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from llmrec.data.requests import (
    ForgetRequest,
    interactions_request,
    users_request,
)
from llmrec.data.retained import RetainedView
from llmrec.data.split import TRAIN
from llmrec.errors import ArtifactError, DataError
from llmrec.forget import registry as stages
from llmrec.forget import runner as forget_pipeline
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore

KINDS = ("interactions", "user", "item", "attribute")


@functools.lru_cache(maxsize=1)
def _encoded_catalogue() -> tuple[Path, np.ndarray]:
    root = Path(tempfile.mkdtemp(prefix="llmrec-emb-"))
    atexit.register(shutil.rmtree, root, True)
    store = RetrievalStore.build(Workspace(root / "ws0"), cache_dir=root / "cache")
    return root / "cache", store.item_embeddings.copy()


def shared_text_cache(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """``(cache_dir, full catalogue embeddings)``: a private copy of an embedding cache
    filled by one real encoding per test session (stores purge superseded entries, so
    tests must not share the folder itself)."""
    src, full = _encoded_catalogue()
    dst = tmp_path / "embedding-cache"
    if not dst.exists():
        shutil.copytree(src, dst)
    return dst, full


@pytest.fixture()
def only_retrieval_stage(monkeypatch):
    """Run ``forget`` with the retrieval stage only (other stages have their own tests)."""
    monkeypatch.setattr(stages, "STAGES", stages.select("retrieval"))


def random_request(
    kind: str, rng: np.random.Generator, ws: Workspace, view: RetainedView
) -> ForgetRequest:
    """A random, valid request of ``kind`` against the retained data of ``view``."""
    ds = ws.dataset
    alive = np.flatnonzero(~view.forgotten_users)
    if kind == "interactions":
        train = np.flatnonzero(view.keep & (ws.split.part == TRAIN))
        if rng.random() < 0.6:  # several interactions of one user
            u = rng.choice(np.unique(ds.inter_user[train]))
            pool = train[ds.inter_user[train] == u]
        else:  # scattered interactions of any part
            pool = np.flatnonzero(view.keep)
        k = int(min(len(pool), rng.integers(1, 6)))
        return interactions_request(ds, rng.choice(pool, size=k, replace=False))
    if kind == "user":
        return users_request(ds, rng.choice(alive, size=int(rng.integers(1, 3)), replace=False))
    if kind == "item":
        left = np.flatnonzero(~view.forgotten_items)
        pop = np.bincount(ds.inter_item[view.keep], minlength=ds.n_items)[left] + 1.0
        items = rng.choice(left, size=int(rng.integers(1, 3)), replace=False, p=pop / pop.sum())
        return ForgetRequest("item", items=tuple(sorted(str(ds.item_tokens[i]) for i in items)))
    attrs = rng.choice(ds.user_attributes, size=int(rng.integers(1, 3)), replace=False)
    users = None
    if rng.random() > 0.15:
        picked = rng.choice(alive, size=int(rng.integers(1, 30)), replace=False)
        users = [str(ds.user_tokens[u]) for u in picked]
    return ForgetRequest.from_dict(
        {"kind": "attribute", "attributes": list(attrs)}
        | ({"users": users} if users is not None else {})
    )


def scratch(tmp_path: Path, ws: Workspace, requests: list[ForgetRequest], **kw) -> RetrievalStore:
    """A store built from scratch in a fresh workspace whose ledger holds ``requests``."""
    fresh = Workspace(tmp_path / f"scratch-{len(requests)}")
    fresh.__dict__["dataset"] = ws.dataset  # same files: skip parsing them again
    with fresh.ledger() as led:
        led.record_many(requests)
    assert fresh.view().version == ws.view().version
    return RetrievalStore.build(fresh, **kw)


def assert_never_served(store: RetrievalStore, users: np.ndarray) -> None:
    """Acceptance 2: forgotten items / interactions appear in no candidate list or history."""
    ds, view = store.ws.dataset, store.view
    forgotten = np.flatnonzero(view.forgotten_items)
    cands = store.candidates(users)
    assert not np.isin(cands, forgotten).any()
    gone = ~view.keep
    for u in users:
        items, _ = store.history(u)
        assert not np.isin(items, forgotten).any()
        lost = ds.inter_item[gone & (ds.inter_user == u)]
        kept = ds.inter_item[view.keep & (ds.inter_user == u)]
        assert not np.isin(items, np.setdiff1d(lost, kept)).any()
    if len(forgotten):
        assert not np.isin(store.index.ids, forgotten).any()
        _, hits = store.index.search(store.item_embeddings[:5], 50)
        assert not np.isin(hits, forgotten).any()


def test_cache_entries_equal_fresh_encoding(tmp_path):
    cache, full = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    store = RetrievalStore.build(ws, cache_dir=cache)
    assert np.array_equal(store.item_embeddings, full)
    ds = ws.dataset
    item = ds.item_tokens[int(np.argmax(np.bincount(ds.inter_item)))]
    forget_pipeline.forget(ws, [ForgetRequest("item", items=(str(item),))])
    store = RetrievalStore.load(ws)
    ids = store.embeddings.ids
    assert len(ids) == ds.n_items - 1
    assert np.array_equal(store.embeddings.items, full[ids])
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].endswith(f"__v{store.ledger_version}.npz")


@pytest.mark.slow
def test_incremental_forget_equals_scratch_build(tmp_path, only_retrieval_stage):
    """Acceptance 1: 20 random requests of each kind, applied one by one through ``forget``;
    after the first and the last of each kind (and halfway) every artifact equals a build
    from scratch on the retained data: index ids and vectors, embeddings, co-occurrence
    statistics, clusters, the candidate lists of every user and every strategy's output."""
    cache, _ = shared_text_cache(tmp_path)
    rng = np.random.default_rng(7)
    ws = Workspace(tmp_path / "ws")
    RetrievalStore.build(ws, cache_dir=cache)
    ds = ws.dataset
    view = RetainedView.full(ds)
    done: list[ForgetRequest] = []
    for kind in KINDS:
        for step in range(20):
            req = random_request(kind, rng, ws, view)
            view.apply(req)
            out = forget_pipeline.forget(ws, [req])
            assert out["stages"]["retrieval"]["stores"]["retrieval"]["applied"]
            done.append(req)
            if step not in (0, 9, 19):
                continue
            inc = RetrievalStore.load(ws)
            ref = scratch(tmp_path, ws, done, cache_dir=cache)
            full = step == 19
            touched = np.unique(np.concatenate([rng.choice(ds.n_users, 60), _owners(ws, req)]))
            users = np.arange(ds.n_users) if full else touched
            diff = inc.differences(ref, users=users)
            assert diff == [], f"after {len(done)} requests ({kind} #{step + 1}): {diff}"
            assert_never_served(inc, users)


def _owners(ws: Workspace, req: ForgetRequest) -> np.ndarray:
    ds = ws.dataset
    if req.kind == "interactions":
        return np.array([ds.user_index(u) for u, _ in req.pairs])
    if req.kind in ("user", "attribute") and req.users:
        return np.array([ds.user_index(u) for u in req.users])
    if req.kind == "item":
        items = [ds.item_index(i) for i in req.items]
        return np.unique(ds.inter_user[np.isin(ds.inter_item, items)])[:40]
    return np.zeros(0, np.int64)


def test_forgotten_item_and_interaction_never_served(tmp_path, only_retrieval_stage):
    """Acceptance 2, with controls: the item and the interaction are served before the
    request and nowhere afterwards (candidates of every user, histories, strategies, index)."""
    cache, _ = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    store = RetrievalStore.build(ws, cache_dir=cache)
    ds = ws.dataset
    everyone = np.arange(ds.n_users)
    cands = store.candidates(everyone)
    item = int(np.bincount(cands[cands >= 0]).argmax())  # the most recommended item
    holder = int(everyone[np.isin(cands, [item]).any(axis=1)][0])
    fan = next(u for u in everyone if item in store.history(u)[0])
    assert any(item in store.retrieve(fan, s, H=500)["history_items"] for s in _strategies())
    u = 10
    items, _ = store.history(u)
    pair_item = int(items[0])
    assert pair_item in store.retrieve(u, "diversity", H=len(items))["history_items"]

    forget_pipeline.forget(
        ws,
        [
            ForgetRequest("item", items=(str(ds.item_tokens[item]),)),
            ForgetRequest(
                "interactions", pairs=((str(ds.user_tokens[u]), str(ds.item_tokens[pair_item])),)
            ),
        ],
    )
    store = RetrievalStore.load(ws)
    cands = store.candidates(everyone)
    assert not (cands == item).any()
    assert np.isneginf(store.candidate_scores(np.array([holder]))[0, item])
    for v in (fan, holder, u):
        for s in _strategies():
            out = store.retrieve(v, s, H=500, n_candidates=200)
            assert item not in out["history_items"] and item not in out["candidates"]
    assert pair_item not in store.history(u)[0]
    for s in _strategies():
        assert pair_item not in store.retrieve(u, s, H=500)["history_items"]
    assert item not in store.index.ids
    _, hits = store.index.search(store.item_embeddings[[pair_item]], ds.n_items)
    assert item not in hits
    _, near = store.similar_items(np.array([pair_item]), k=ds.n_items)
    assert item not in near and pair_item not in near
    assert_never_served(store, everyone)


def _strategies() -> tuple[str, ...]:
    return ("preference", "diversity", "attention")


def test_forgotten_user_and_attributes(tmp_path, only_retrieval_stage):
    cache, _ = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    RetrievalStore.build(ws, cache_dir=cache)
    forget_pipeline.forget(
        ws,
        [
            ForgetRequest("user", users=("21",)),
            ForgetRequest("attribute", attributes=("gender", "age"), users=("7",)),
        ],
    )
    store = RetrievalStore.load(ws)
    ds = ws.dataset
    with pytest.raises(DataError, match="forgotten"):
        store.retrieve(ds.user_index("21"), "preference")
    assert len(store.history(ds.user_index("21"))[0]) == 0
    prof = store.retrieve(ds.user_index("7"), "preference")["profile"]
    assert "gender" not in prof and "age" not in prof and "occupation" in prof
    assert "gender" in store.profile(ds.user_index("8"))


def test_retrieve_contract(tmp_path):
    cache, _ = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    store = RetrievalStore.build(ws, cache_dir=cache, n_candidates=30)
    ds = ws.dataset
    u = ds.user_index("13")  # a heavy user (hundreds of ratings)
    items, ratings = store.history(u)
    train = ws.split.mask(TRAIN) & (ds.inter_user == u)
    assert sorted(items) == sorted(np.unique(ds.inter_item[train]))
    assert len(np.unique(items)) == len(items)
    for s in _strategies():
        out = store.retrieve(u, s, H=40, seed=3)
        h = out["history_items"]
        assert len(h) == 40 and len(np.unique(h)) == 40 and np.isin(h, items).all()
        order = [int(np.flatnonzero(items == i)[0]) for i in h]
        assert order == sorted(order)  # chronological
        assert np.array_equal(out["history_ratings"], ratings[order])
        assert len(out["candidates"]) == 30 and not np.isin(out["candidates"], items).any()
        assert out["ledger_version"] == 0 and out["profile"]["gender"] in ("M", "F")
        again = store.retrieve(u, s, H=40, seed=3)
        assert np.array_equal(again["history_items"], h)
    a = store.retrieve(u, "preference", H=40, seed=3)["history_items"]
    b = store.retrieve(u, "preference", H=40, seed=4)["history_items"]
    assert not np.array_equal(a, b)  # the seed drives the sampling
    small = ds.user_index(str(ds.user_tokens[np.argmin(np.bincount(ds.inter_user))]))
    n = len(store.history(small)[0])
    assert len(store.retrieve(small, "attention", H=n + 5)["history_items"]) == n
    cands = store.candidates(np.arange(ds.n_users), n=20, exclude_valid=True)
    valid = ws.split.mask(1) & (ds.inter_user == u)
    assert not np.isin(cands[u], ds.inter_item[valid]).any()
    assert store.item_embeddings.shape == (ds.n_items, 384)
    with pytest.raises(ValueError, match="strategy"):
        store.retrieve(u, "magic")
    with pytest.raises(DataError):
        store.retrieve(ds.n_users + 5, "preference")


def test_other_index_types_stay_exact(tmp_path, only_retrieval_stage):
    """Trained (IVF) and graph (HNSW) indexes are rebuilt on item forgetting: still exact."""
    for factory in ("IVF16,Flat", "HNSW16"):
        cache, _ = shared_text_cache(tmp_path / factory.replace(",", "_"))
        ws = Workspace(tmp_path / factory.replace(",", "_") / "ws")
        RetrievalStore.build(ws, cache_dir=cache, factory=factory)
        reqs = [
            ForgetRequest("item", items=("50", "100")),
            ForgetRequest("user", users=("5",)),
        ]
        forget_pipeline.forget(ws, reqs)
        inc = RetrievalStore.load(ws)
        ref = scratch(
            tmp_path / factory.replace(",", "_"), ws, reqs, cache_dir=cache, factory=factory
        )
        users = np.arange(0, ws.dataset.n_users, 40)
        assert inc.differences(ref, users=users) == []
        q = inc.item_embeddings[:8]
        assert np.array_equal(inc.index.search(q, 10)[1], ref.index.search(q, 10)[1])


def test_load_errors_and_staleness(tmp_path):
    cache, _ = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(ArtifactError, match="index build"):
        RetrievalStore.load(ws)
    RetrievalStore.build(ws, cache_dir=cache)
    with ws.ledger() as led:  # recorded but the retrieval stage never ran
        led.record(ForgetRequest("user", users=("3",)), stages=["retrieval"])
    with pytest.raises(ArtifactError, match="stale"):
        RetrievalStore.load(ws)
    stale = RetrievalStore.load(ws, allow_stale=True)
    assert stale.ledger_version == 0
    assert forget_pipeline.resume(ws)["stages"]["retrieval"]["stores"]["retrieval"]["applied"]
    store = RetrievalStore.load(ws)
    assert store.ledger_version == 1
    assert store.apply(ws)["applied"] is False  # idempotent


def test_two_writers_catch_up(tmp_path):
    """A store object left behind by another writer adopts the committed state first."""
    cache, _ = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    RetrievalStore.build(ws, cache_dir=cache)
    a, b = RetrievalStore.load(ws), RetrievalStore.load(ws)
    reqs = [ForgetRequest("user", users=("4",)), ForgetRequest("item", items=("7",))]
    with ws.ledger() as led:
        led.record(reqs[0])
    assert a.apply(ws)["ledger_version"] == 1
    with ws.ledger() as led:
        led.record(reqs[1])
    out = b.apply(ws)  # b still held version 0 in memory
    assert out["from_version"] == 1 and out["ledger_version"] == 2
    ref = scratch(tmp_path, ws, reqs, cache_dir=cache)
    assert RetrievalStore.load(ws).differences(ref, users=np.arange(0, 943, 50)) == []


def test_interrupted_in_place_update_is_recounted(tmp_path, only_retrieval_stage):
    """A crash after the in-place counts update but before the manifest commit leaves counts
    that disagree with the manifest's checksum: load counts them again from the data."""
    cache, _ = shared_text_cache(tmp_path)
    ws = Workspace(tmp_path / "ws")
    store = RetrievalStore.build(ws, cache_dir=cache)
    before = store.cooccurrence.counts.copy()
    counts = np.load(store.root / "counts.npy", mmap_mode="r+")
    counts[3, 5] += 7  # a torn write
    counts.flush()
    del counts
    again = RetrievalStore.load(ws)
    assert np.array_equal(again.cooccurrence.counts, before)
    assert np.array_equal(np.load(store.root / "counts.npy"), before)  # repaired on load


def test_cf_encoder_forgets_exactly(tmp_path, tiny_dir, only_retrieval_stage):
    """The CF encoder is retrained from scratch (same seed) when its training data changes."""
    kw = dict(encoder="cf", cf_params={"epochs": 3, "dim": 8}, n_clusters=3, n_candidates=4)
    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=tiny_dir)
    store = RetrievalStore.build(ws, **kw)
    assert store.user_embeddings.shape == (6, 8) and store.item_embeddings.shape == (8, 8)
    reqs = [
        ForgetRequest("attribute", attributes=("gender",)),
        ForgetRequest("interactions", pairs=(("u1", "i3"),)),
        ForgetRequest("item", items=("i4",)),
        ForgetRequest("user", users=("u3",)),
    ]
    for k in range(len(reqs)):
        forget_pipeline.forget(ws, [reqs[k]])
        inc = RetrievalStore.load(ws)
        fresh = Workspace(tmp_path / f"fresh{k}", dataset="tiny", data_dir=tiny_dir)
        with fresh.ledger() as led:
            led.record_many(reqs[: k + 1])
        ref = RetrievalStore.build(fresh, **kw)
        assert inc.differences(ref) == []
        assert np.array_equal(inc.user_embeddings, ref.user_embeddings)
    assert not inc.user_embeddings[ws.dataset.user_index("u3")].any()
    assert not inc.item_embeddings[ws.dataset.item_index("i4")].any()


def test_retrieve_serves_every_strategy_of_the_strategies_module(tmp_path):
    """The store's retrieve() is strategies.select on its own embeddings and clusters, for the
    reference baselines too (dp with its per-cluster ratios)."""
    from llmrec.data.synthetic import SyntheticSpec, write_synthetic
    from retrieval import strategies as st

    data = write_synthetic(SyntheticSpec(600, users=20, items=30, seed=2), tmp_path / "d", "s")
    ws = Workspace(tmp_path / "ws", dataset="s", data_dir=data)
    store = RetrievalStore.build(ws, encoder="cf", n_candidates=10, n_clusters=3, seed=5)
    user = int(np.argmax([len(store.history(u)[0]) for u in range(ws.dataset.n_users)]))
    items, ratings = store.history(user)
    ratios = np.array([0.5, 0.3, 0.2])
    for name in st.ALL_STRATEGIES:
        got = store.retrieve(user, name, H=4, ratios=ratios if name == "dp" else None)
        vecs = store.item_embeddings.astype(np.float64)
        norm = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = vecs / np.where(norm > 0, norm, 1.0)
        pos = st.select(
            name,
            history_vectors=vecs[items],
            history_clusters=store.clusters.labels[items],
            ratings=ratings,
            candidate_vectors=vecs[got["candidates"]],
            H=4,
            seed=store.config["seed"],
            user=user,
            ratios=ratios,
        )
        assert np.array_equal(got["history_items"], items[pos]), name
        assert len(got["history_items"]) == min(4, len(items))
    with pytest.raises(ValueError, match="needs per-cluster ratios"):
        store.retrieve(user, "dp", H=4)
    with pytest.raises(ValueError, match="strategy must be one of"):
        store.retrieve(user, "magic", H=4)
