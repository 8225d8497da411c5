"""UnlearnRec: resumable pre-training, the encoder artifact, unlearning with the encoder."""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest
import torch

from llmrec.cli.unlearn import cmd_pretrain
from llmrec.data.requests import interactions_request, user_interactions_request
from llmrec.data.split import TRAIN
from llmrec.models import BPRMF, LightGCN, build_model
from llmrec.unlearning.base import make_task
from llmrec.unlearning.fingerprint import model_fingerprint
from llmrec.unlearning.unlearnrec import (
    EncoderArtifact,
    ResidualProblem,
    UnlearnRec,
    pretrain_encoder,
    simulate_removal,
)

FAST = dict(dim=16, epochs=4, batch_size=2048, n_neg=2)
PRE = dict(requests=6, valid_requests=2, hidden=32)


@pytest.fixture(scope="module")
def data(synthetic):
    ds, split, folder = synthetic
    m = split.mask(TRAIN)
    train = (ds.inter_user[m], ds.inter_item[m])
    models = {}
    for name in ("bpr", "lightgcn"):
        model = build_model(name, ds.n_users, ds.n_items, **FAST, seed=3)
        model.fit(*train)
        model.ledger_version = 0
        models[name] = model
    return ds, split, train, models, folder


@pytest.fixture(scope="module")
def artifact(data):
    _, _, train, models, _ = data
    return pretrain_encoder(models["bpr"], train, ledger_version=0, epochs=4, **PRE)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_simulated_requests_cover_every_kind(data):
    ds, _, train, _, _ = data
    rng = np.random.default_rng(0)
    for kind in ("users", "interactions", "partial-users", "items"):
        k, removed = simulate_removal(*train, ds.n_users, ds.n_items, rng, kind)
        assert k == kind and 0 < removed.sum() < len(removed)
    _, removed = simulate_removal(*train, ds.n_users, ds.n_items, rng, "users")
    gone = np.unique(train[0][removed])
    assert not np.isin(train[0][~removed], gone).any()  # whole histories


def test_objective_gradient_at_trained_point_is_the_forget_gradient(data):
    ds, _, train, models, _ = data
    prob = ResidualProblem(models["bpr"], train)
    _, removed = simulate_removal(
        *train, ds.n_users, ds.n_items, np.random.default_rng(1), "interactions"
    )
    d = prob.request(removed)
    du = torch.zeros_like(d.feats_u.emb, requires_grad=True)
    di = torch.zeros_like(d.feats_i.emb, requires_grad=True)
    gu, gi = torch.autograd.grad(prob.objective(d, du, di), [du, di])
    assert torch.allclose(gu, -d.feats_u.grad, atol=1e-4)
    assert torch.allclose(gi, -d.feats_i.grad, atol=1e-4)
    # preconditioned steps decrease the objective
    _, _, values = prob.refine(d, du.detach(), di.detach(), 3)
    after = float(prob.objective(d, *prob.refine(d, du.detach(), di.detach(), 3)[:2]))
    assert values[0] == 0.0 and after < values[1] < 0


def test_pretraining_resumes_where_it_stopped(data, tmp_path):
    _, _, train, models, _ = data
    model = models["bpr"]
    full = pretrain_encoder(model, train, epochs=3, **PRE)
    ck = tmp_path / "ck"
    pretrain_encoder(model, train, checkpoint_dir=ck, epochs=2, **PRE)  # "interrupted"
    assert sorted(p.name for p in ck.iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]
    logs: list[str] = []
    resumed = pretrain_encoder(model, train, checkpoint_dir=ck, epochs=3, log=logs.append, **PRE)
    assert any("resuming" in line and "epoch 2" in line for line in logs)
    assert len(resumed.history) == 3 and (ck / "epoch-0003.pt").exists()
    assert _states_equal(resumed.encoder, full.encoder)
    assert [h["train_objective"] for h in resumed.history] == [
        h["train_objective"] for h in full.history
    ]


def test_artifact_roundtrip_records_its_data(artifact, data, tmp_path):
    _, _, _, models, _ = data
    path = artifact.save(tmp_path / "enc.pt")
    back = EncoderArtifact.load(path)
    assert back.ledger_version == 0
    assert back.model_fingerprint == model_fingerprint(models["bpr"])
    assert back.data_hash == artifact.data_hash and back.settings == artifact.settings
    assert _states_equal(back.encoder, artifact.encoder)
    assert set(back.problem_state) == set(ResidualProblem.STATE_KEYS)
    # on held-out requests the encoder alone achieves most of the achievable decrease
    last = back.history[-1]
    assert last["valid_objective"] < 0.9 * last["valid_objective_optimum"] < 0


def test_unlearn_user_histories(artifact, data):
    ds, split, _, models, _ = data
    model = models["bpr"]
    users = np.unique(ds.inter_user)[:6]
    req = user_interactions_request(ds, users)
    new, rec = UnlearnRec(encoder=artifact).unlearn(model, (ds, split), [req])
    assert type(new) is BPRMF and new is not model
    assert torch.count_nonzero(new.user_emb.weight[torch.as_tensor(users)]) == 0  # no info left
    assert rec.info["reset_users"] == 6 and rec.info["statistics_from_artifact"]
    assert rec.info["objective_final"] <= rec.info["objective_encoder"] < 0
    assert rec.info["pretrain_seconds"] == 0.0  # given, not trained by this call
    # other users' rows are untouched, items the forgotten users had moved
    others = np.setdiff1d(np.arange(ds.n_users), users)
    task = make_task((ds, split), [req])
    untouched = np.setdiff1d(others, task.forget[0])
    assert torch.equal(new.user_emb.weight[untouched], model.user_emb.weight[untouched])
    moved = np.unique(task.forget[1])
    assert not torch.equal(new.item_emb.weight[moved], model.item_emb.weight[moved])
    # the encoder was pre-trained for this model only
    other = build_model("bpr", ds.n_users, ds.n_items, **FAST, seed=4)
    with pytest.raises(ValueError, match="another model"):
        UnlearnRec(encoder=artifact).unlearn(other, (ds, split), [req])


def test_lightgcn_pretrains_in_call_and_keeps_its_class(data):
    ds, split, train, models, _ = data
    model = models["lightgcn"]
    rows = np.flatnonzero(split.mask(TRAIN))[::40]
    req = interactions_request(ds, rows)
    un = UnlearnRec(pretrain_requests=4, pretrain_epochs=1, hidden=16)
    t0 = time.perf_counter()
    new, rec = un.unlearn(model, (ds, split), [req])
    wall = time.perf_counter() - t0
    assert type(new) is LightGCN
    assert rec.info["encoder_pretrained_now"] and rec.info["pretrain_seconds"] > 0
    # pre-training is off the request's clock
    assert rec.info["encoder_setup_seconds"] >= rec.info["pretrain_seconds"]
    assert rec.seconds + rec.info["encoder_setup_seconds"] <= wall
    # the returned LightGCN propagates over the retained graph
    task = make_task((ds, split), [req])
    assert new._graph[0].numel() == len(task.train[0])
    assert torch.isfinite(new.score(np.arange(10))).all()


def test_workspace_cache_and_pretrain_command(data, tmp_path, capsys):
    from llmrec.models.training import checkpoint_path
    from llmrec.workspace import Workspace

    ds, split, train, _, folder = data
    ws = Workspace(tmp_path / "ws", dataset="s", data_dir=folder / "s", split={
        "method": "random", "seed": 1, "ratios": [0.8, 0.1, 0.1]})  # fmt: skip
    model = build_model("bpr", ds.n_users, ds.n_items, **FAST, seed=3)
    m = ws.split.mask(TRAIN)
    model.fit(ws.dataset.inter_user[m], ws.dataset.inter_item[m])
    model.save(checkpoint_path(ws, "bpr"), 0)
    args = argparse.Namespace(
        workspace=str(ws.root), model="bpr", requests=4, epochs=1, hidden=16, no_resume=False,
        seed=2020,
    )  # fmt: skip
    out = cmd_pretrain(args)
    assert out["ledger_version"] == 0 and out["history"]
    art_path = out["artifact"]
    un = UnlearnRec(pretrain_requests=4, pretrain_epochs=1, hidden=16)
    req = user_interactions_request(ws.dataset, np.array([0, 1]))
    _, rec = un.unlearn(model, ws, [req])
    assert not rec.info["encoder_pretrained_now"]  # found in artifacts/unlearnrec
    assert str(un.artifact_path(model)) == art_path
