"""CF base models on tiny synthetic data: learning, determinism, checkpoints, warm start."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.evaluation import evaluate_ranking
from llmrec.models import (
    BPRMF,
    MODEL_REGISTRY,
    LightGCN,
    NegativeSampler,
    build_model,
    load_model,
    normalized_adjacency,
)

N_USERS, N_ITEMS = 40, 30
# Small-data recipe: many small steps instead of the ml-100k defaults' few large ones.
FAST = {"epochs": 25, "batch_size": 64, "lr": 0.05, "dim": 16, "n_neg": 4, "reg": 1e-4}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads; on a busy machine spinning workers cost seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted(seed: int = 0):
    """Users 0-19 like items 0-14, users 20-39 like items 15-29 (60% of their group's items)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(N_USERS):
        group = np.arange(15) + (0 if u < 20 else 15)
        chosen = rng.choice(group, size=9, replace=False)
        users += [u] * len(chosen)
        items += list(chosen)
    users, items = np.array(users), np.array(items)
    test = np.zeros(len(users), dtype=bool)
    test[rng.choice(len(users), size=len(users) // 5, replace=False)] = True
    return (users[~test], items[~test]), (users[test], items[test])


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module", params=["bpr", "lightgcn"])
def trained(request, data):
    train, _ = data
    return build_model(request.param, N_USERS, N_ITEMS, seed=7, **FAST).fit(*train)


def test_registry_and_config():
    assert set(MODEL_REGISTRY) == {"bpr", "lightgcn"}
    m = build_model("LightGCN", N_USERS, N_ITEMS, dim=8, n_layers=3)
    assert isinstance(m, LightGCN) and isinstance(m, torch.nn.Module)
    assert m.config["dim"] == 8 and m.config["n_layers"] == 3 and m.config["model"] == "lightgcn"
    json.dumps(m.config)  # json-serialisable
    assert m.user_emb.weight.shape == (N_USERS, 8) and m.item_emb.weight.shape == (N_ITEMS, 8)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("svd", 3, 3)
    with pytest.raises(TypeError):
        build_model("bpr", 3, 3, no_such_option=1)


def test_learns_planted_groups(trained, data):
    train, test = data
    u0, u1 = trained.history[0]["loss"], trained.history[-1]["loss"]
    assert u1 < 0.5 * u0
    assert all({"epoch", "loss", "seconds"} <= set(h) for h in trained.history)
    res = evaluate_ranking(trained.score, N_ITEMS, *train, *test, ks=(5,), return_per_user=True)
    users = res["per_user"]["users"]
    own_group = (res["topk"] < 15) == (users < 20)[:, None]
    assert own_group.mean() > 0.9
    assert res["recall@5"] > 0.6


def test_score_is_dot_product_of_final_embeddings(trained):
    users = np.array([0, 5, 39])
    s = trained.score(users)
    assert s.shape == (3, N_ITEMS) and not s.requires_grad
    expect = trained.user_embeddings()[users] @ trained.item_embeddings().T
    torch.testing.assert_close(s, expect)
    if isinstance(trained, BPRMF):
        assert torch.equal(trained.user_embeddings(), trained.user_emb.weight)
    else:  # propagated, not the base table
        assert not torch.allclose(trained.user_embeddings(), trained.user_emb.weight)


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_same_seed_same_weights(name, data):
    train, _ = data
    cfg = dict(FAST, epochs=3)
    a = build_model(name, N_USERS, N_ITEMS, seed=3, **cfg).fit(*train)
    b = build_model(name, N_USERS, N_ITEMS, seed=3, **cfg).fit(*train)
    c = build_model(name, N_USERS, N_ITEMS, seed=4, **cfg).fit(*train)
    assert torch.equal(a.user_emb.weight, b.user_emb.weight)
    assert torch.equal(a.item_embeddings(), b.item_embeddings())
    assert not torch.equal(a.user_emb.weight, c.user_emb.weight)
    # Refitting the same object restarts from the seeded initialisation.
    a.fit(*train)
    assert torch.equal(a.user_emb.weight, b.user_emb.weight)


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_save_load_round_trip(name, data, tmp_path):
    train, _ = data
    m = build_model(name, N_USERS, N_ITEMS, seed=1, **dict(FAST, epochs=2)).fit(*train)
    path = tmp_path / "sub" / f"{name}.pt"
    m.save(path, ledger_version=3, extra={"note": "x", "keys": [1, 2]})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    r = load_model(path)
    assert type(r) is type(m) and r.ledger_version == 3 and r.extra == {"note": "x", "keys": [1, 2]}
    assert r.config == m.config and r.history == m.history and not r.training
    assert torch.equal(r.user_emb.weight, m.user_emb.weight)
    torch.testing.assert_close(r.score(np.arange(N_USERS)), m.score(np.arange(N_USERS)))
    # Overwriting is atomic and bumps the version.
    m.save(path, ledger_version=4)
    assert load_model(path).ledger_version == 4


def test_load_rejects_foreign_file(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an llmrec model"):
        load_model(path)


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_warm_start(name, data):
    train, _ = data
    src = build_model(name, N_USERS, N_ITEMS, seed=1, **dict(FAST, epochs=3)).fit(*train)
    before = src.user_emb.weight.detach().clone()
    copy = build_model(name, N_USERS, N_ITEMS, seed=9, **dict(FAST, epochs=0))
    copy.fit(*train, init_from=src)
    assert torch.equal(copy.user_emb.weight, src.user_emb.weight)
    assert torch.equal(copy.item_embeddings(), src.item_embeddings())
    tuned = build_model(name, N_USERS, N_ITEMS, seed=9, **dict(FAST, epochs=1))
    tuned.fit(*train, init_from=src)
    cold = build_model(name, N_USERS, N_ITEMS, seed=9, **dict(FAST, epochs=1)).fit(*train)
    assert not torch.equal(tuned.user_emb.weight, src.user_emb.weight)
    assert not torch.equal(tuned.user_emb.weight, cold.user_emb.weight)
    assert torch.equal(src.user_emb.weight, before)  # the source is not modified
    other = build_model(name, N_USERS + 1, N_ITEMS, **dict(FAST, epochs=0))
    with pytest.raises(ValueError, match="warm-start"):
        other.fit(*train, init_from=src)


def test_early_stopping_restores_best(data):
    train, test = data
    m = BPRMF(N_USERS, N_ITEMS, seed=2, **dict(FAST, epochs=40), patience=3)
    m.fit(*train, valid=test)
    scores = [h["valid_ndcg@10"] for h in m.history]
    assert len(scores) == len(m.history) <= 40
    best = max(scores)
    assert m._valid_ndcg(train, test) == pytest.approx(best)
    if len(m.history) < 40:  # stopped early: the last `patience` evaluations did not improve
        assert max(scores[-3:]) <= best and scores.index(best) == len(scores) - 4


def test_input_validation():
    m = BPRMF(3, 4, dim=4, epochs=1)
    with pytest.raises(ValueError, match="item index"):
        m.fit(np.array([0, 1]), np.array([0, 4]))
    with pytest.raises(ValueError, match="user index"):
        m.fit(np.array([-1]), np.array([0]))
    with pytest.raises(ValueError, match="no training pairs"):
        m.fit(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    with pytest.raises(TypeError):
        m.fit(np.array([0.5]), np.array([1.0]))


def test_negative_sampler_avoids_positives():
    users = np.array([0, 0, 0, 1])
    items = np.array([0, 1, 2, 3])  # user 0 misses only item 3 of 4
    for dense_limit in (0, 1 << 20):  # sorted-key and dense-table lookups
        s = NegativeSampler(2, 4, users, items, dense_limit=dense_limit)
        g = torch.Generator().manual_seed(0)
        neg = s.sample(torch.tensor([0, 1, 0]), n_neg=50, generator=g)
        assert neg.shape == (3, 50)
        assert (neg[[0, 2]] == 3).all() and (neg[1] != 3).all()
        assert set(neg[1].tolist()) == {0, 1, 2}
        again = s.sample(torch.tensor([0, 1, 0]), 50, torch.Generator().manual_seed(0))
        assert torch.equal(neg, again)


def test_dense_and_gather_scoring_give_the_same_loss(data):
    train, _ = data
    m = LightGCN(N_USERS, N_ITEMS, seed=0, dim=8)
    m.set_graph(*train)
    g = torch.Generator().manual_seed(0)
    users = torch.randint(0, N_USERS, (32,), generator=g)
    pos = torch.randint(0, N_ITEMS, (32,), generator=g)
    neg = torch.randint(0, N_ITEMS, (32, 5), generator=g)
    dense = m._batch_loss(users, pos, neg)
    grad_dense = torch.autograd.grad(dense, m.user_emb.weight)[0]
    m._use_dense_scores = lambda rows: False  # force the row-gather path
    gathered = m._batch_loss(users, pos, neg)
    grad_gather = torch.autograd.grad(gathered, m.user_emb.weight)[0]
    torch.testing.assert_close(dense, gathered)
    torch.testing.assert_close(grad_dense, grad_gather)


def test_normalized_adjacency_and_propagation():
    users, items = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # (1, 1) duplicated
    adj = normalized_adjacency(2, 3, users, items).to_dense()
    deg = np.array([2, 1, 1, 2, 0])  # u0, u1, i0, i1, i2 (node n_users + j is item j)
    expect = np.zeros((5, 5))
    for u, i in {(0, 0), (0, 1), (1, 1)}:
        expect[u, 2 + i] = expect[2 + i, u] = 1 / np.sqrt(deg[u] * deg[2 + i])
    np.testing.assert_allclose(adj.numpy(), expect, rtol=1e-6)

    m = LightGCN(2, 3, dim=4, n_layers=2, seed=0)
    m.set_graph(users, items)
    uw = m.user_emb.weight.detach().clone().requires_grad_(True)
    iw = m.item_emb.weight.detach().clone().requires_grad_(True)
    pu, pi = m.propagate(uw, iw)
    a = torch.tensor(expect, dtype=torch.float32)
    e0 = torch.cat([uw, iw])
    ref = (e0 + a @ e0 + a @ (a @ e0)) / 3
    torch.testing.assert_close(torch.cat([pu, pi]), ref)
    # Gradient through the custom symmetric sparse product matches dense autograd.
    w = torch.randn(5, 4)
    g_ours = torch.autograd.grad((torch.cat([pu, pi]) * w).sum(), (uw, iw))
    g_ref = torch.autograd.grad((ref * w).sum(), (uw, iw))
    for x, y in zip(g_ours, g_ref):
        torch.testing.assert_close(x, y)
    # Editing the base table changes the final embeddings through propagate.
    with torch.no_grad():
        m.user_emb.weight[0] = 0
    assert not torch.allclose(m.user_embeddings()[0], pu[0].detach())


def test_lightgcn_needs_a_graph():
    with pytest.raises(RuntimeError, match="no graph"):
        LightGCN(2, 2, dim=4).user_embeddings()
