"""SISA / RecEraser: partitions, exact unlearning of the touched shards, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.data.partition import balanced_kmeans, capped_assignment, random_partition
from llmrec.data.requests import interactions_request, user_interactions_request
from llmrec.data.split import TRAIN
from llmrec.models import build_model
from llmrec.unlearning.base import make_task
from llmrec.unlearning.receraser import RecEraser
from llmrec.unlearning.shard_aggregation import AttentionAggregator, train_aggregator
from llmrec.unlearning.shard_pool import run_jobs
from llmrec.unlearning.sharded_model import ShardedModel, load_sharded
from llmrec.unlearning.sisa import SISA

FAST = dict(dim=16, epochs=3, batch_size=2048, n_neg=2)


@pytest.fixture(scope="module")
def data(synthetic):
    ds, split, _ = synthetic
    m = split.mask(TRAIN)
    model = build_model("bpr", ds.n_users, ds.n_items, **FAST, seed=3)
    model.fit(ds.inter_user[m], ds.inter_item[m])
    model.ledger_version = 0
    return ds, split, model


def _state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _from_scratch(sharded: ShardedModel, shard: int, pairs) -> torch.nn.Module:
    """The sub-model a from-scratch build trains on ``pairs`` (its seed, shape, parameters)."""
    job = sharded.shard_job(shard, pairs)
    m = build_model(job["model"], job["n_users"], job["n_items"], **job["params"])
    torch.set_num_threads(sharded.threads)
    return m.fit(job["users"], job["items"])


# ------------------------------------------------------------------------------ partitions


def test_random_partition_balanced_and_seeded():
    a = random_partition(103, 10, 7)
    assert np.array_equal(a, random_partition(103, 10, 7))
    assert not np.array_equal(a, random_partition(103, 10, 8))
    counts = np.bincount(a, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 103


def _greedy(dist: np.ndarray, cap: int) -> np.ndarray:
    """RecEraser's sorted-pair greedy, written naively."""
    n, k = dist.shape
    out = np.full(n, -1)
    load = np.zeros(k, dtype=int)
    for flat in np.argsort(dist, axis=None, kind="stable"):
        p, a = divmod(int(flat), k)
        if out[p] < 0 and load[a] < cap:
            out[p], load[a] = a, load[a] + 1
    return out


@pytest.mark.parametrize("seed", range(5))
def test_capped_assignment_is_the_sorted_pair_greedy(seed):
    rng = np.random.default_rng(seed)
    n, k = 57, 6
    dist = rng.random((n, k))
    cap = int(np.ceil(n / k))
    got = capped_assignment(dist, cap)
    assert np.array_equal(got, _greedy(dist, cap))
    assert np.bincount(got, minlength=k).max() <= cap


def test_balanced_kmeans_separates_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0], [-5, 0], [0, 5], [0, -5]])
    x = np.concatenate([c + rng.normal(0, 0.3, (25, 2)) for c in centres])
    shard, anchors = balanced_kmeans(x, 4, seed=1)
    assert np.bincount(shard, minlength=4).tolist() == [25] * 4
    for c in range(4):  # every true cluster lands in one shard
        assert len(np.unique(shard[c * 25 : (c + 1) * 25])) == 1


# ------------------------------------------------------------------------------ SISA


def test_sisa_retrains_only_touched_shard_exactly(data):
    ds, split, model = data
    un = SISA(n_shards=4, processes=1, seed=11)
    sharded = un.build(model, (ds.inter_user[split.mask(TRAIN)], ds.inter_item[split.mask(TRAIN)]))
    sharded.ledger_version = 0
    # forget part of one user's history: exactly one shard is touched
    user = int(np.flatnonzero(np.bincount(ds.inter_user) > 10)[0])
    rows = np.flatnonzero(split.mask(TRAIN) & (ds.inter_user == user))[:5]
    req = interactions_request(ds, rows)
    new, rec = un.unlearn(sharded, (ds, split), [req])
    target = int(sharded.assignment[user])
    assert rec.info["retrained_shards"] == [target] and rec.info["initial_seconds"] == 0.0
    task = make_task((ds, split), [req])
    parts = new.split(task.train)
    for s in range(4):
        if s == target:
            assert not _state_equal(new.shards[s], sharded.shards[s])
            assert _state_equal(new.shards[s], _from_scratch(new, s, parts[s]))
        else:  # untouched: the very same parameters
            assert _state_equal(new.shards[s], sharded.shards[s])
            assert new.shard_hashes[s] == sharded.shard_hashes[s]
    # compact user tables: a shard holds its users only; the score is the mean of the shards'
    # scores, 0 from the shards that do not hold the user
    assert sum(m.n_users for m in new.shards) == ds.n_users
    users = np.arange(7)
    own = torch.stack([new.shards[new.assignment[u]].score([new.local[u]])[0] for u in users])
    assert torch.allclose(new.score(users), own / 4, atol=1e-5)


def test_sisa_parallel_processes_equal_in_process(data):
    ds, split, _ = data
    m = split.mask(TRAIN)
    u, i = ds.inter_user[m], ds.inter_item[m]
    jobs = [
        {
            "model": "bpr",
            "n_users": ds.n_users,
            "n_items": ds.n_items,
            "params": {**FAST, "seed": 40 + k},
            "users": u[k::2],
            "items": i[k::2],
            "threads": 1,
        }
        for k in range(2)
    ]
    par, info = run_jobs(jobs, processes=2)
    seq, info1 = run_jobs(jobs, processes=1)
    assert info1["processes"] == 1
    assert info["processes"] == 2 or info["fallback"]  # a sandbox without processes falls back
    for a, b in zip(par, seq):
        assert _state_equal(a, b)


# ------------------------------------------------------------------------------ RecEraser


@pytest.mark.parametrize("unit", ["user", "interaction"])
def test_receraser_exact_shards_and_aggregator(data, tmp_path, unit):
    ds, split, model = data
    un = RecEraser(n_shards=3, unit=unit, agg_epochs=3, processes=1, seed=5)
    users = np.unique(ds.inter_user)[:2]
    req = user_interactions_request(ds, users)
    new, rec = un.unlearn(model, (ds, split), [req])
    task = make_task((ds, split), [req])
    assert rec.info["initial_seconds"] > 0
    old = un.build(model, task.train_before)  # the same build the unlearner made
    touched = sorted(set(old.shard_of(*task.forget).tolist()))
    assert rec.info["retrained_shards"] == touched
    parts = new.split(task.train)
    for s in range(3):
        if s in touched:
            assert _state_equal(new.shards[s], _from_scratch(new, s, parts[s]))
        else:
            assert _state_equal(new.shards[s], old.shards[s])
    # the aggregator is retrained from its seed on the retained data over these shards
    agg = AttentionAggregator(3, FAST["dim"], new.agg_settings["hidden"], new.seed)
    s = new.agg_settings
    train_aggregator(
        agg, *new.shard_embeddings(), task.train, s["epochs"], s["lr"], s["batch_size"],
        s["n_neg"], s["reg"], new.seed, new.membership(),
    )  # fmt: skip
    assert _state_equal(agg, new.aggregator)
    # persistence: scores, hashes and ledger version survive
    path = new.save(tmp_path / "sharded.pt", 1)
    back = load_sharded(path)
    assert back.ledger_version == 1 and back.shard_hashes == new.shard_hashes
    assert torch.allclose(back.score(np.arange(5)), new.score(np.arange(5)))
    assert back.user_embeddings().shape == (ds.n_users, FAST["dim"])


def test_receraser_partition_is_balanced(data):
    ds, split, model = data
    m = split.mask(TRAIN)
    for unit, n in (("user", ds.n_users), ("item", ds.n_items)):
        shard, keys = RecEraser(n_shards=4, unit=unit).partition(
            model, (ds.inter_user[m], ds.inter_item[m])
        )
        assert keys is None and np.bincount(shard, minlength=4).max() == int(np.ceil(n / 4))


def test_cache_dir_builds_once_and_any_checkpoint_loads(data, tmp_path):
    from llmrec.unlearning.checkpoint import load_any_model

    ds, split, model = data
    un = SISA(n_shards=3, processes=1, cache_dir=tmp_path / "cache", seed=2)
    first, rec1 = un.unlearn(model, (ds, split), [user_interactions_request(ds, np.array([0]))])
    again, rec2 = un.unlearn(model, (ds, split), [user_interactions_request(ds, np.array([0]))])
    assert rec1.info["initial_built"] and not rec2.info["initial_built"]
    assert len(list((tmp_path / "cache").glob("sisa-bpr-*.pt"))) == 1
    for a, b in zip(first.shards, again.shards):
        assert _state_equal(a, b)
    assert type(load_any_model(first.save(tmp_path / "s.pt", 1))) is ShardedModel
    model.save(tmp_path / "m.pt", 0)
    assert type(load_any_model(tmp_path / "m.pt")) is type(model)
