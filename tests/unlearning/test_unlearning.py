"""Embedding unlearners on small synthetic data: exact block optima, retrain equivalence,
forgetting, checkpoints carrying their ledger version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.data.dataset import load_dataset
from llmrec.data.requests import (
    ForgetRequest,
    interactions_request,
    select_users,
    user_interactions_request,
)
from llmrec.data.split import random_split
from llmrec.errors import LlmrecError
from llmrec.models import build_model, load_model
from llmrec.unlearning import (
    METHODS,
    AltEraser,
    FineTune,
    Retrain,
    ReverseBPR,
    make_task,
    make_unlearner,
)
from llmrec.unlearning.alteraser import RowSystems, _Problem
from llmrec.unlearning.base import sample_triples
from llmrec.unlearning.embeddings import assign_final
from llmrec.workspace import Workspace

FAST = {"epochs": 4, "batch_size": 1024, "n_neg": 4}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from llmrec.data.synthetic import SyntheticSpec, write_synthetic

    folder = tmp_path_factory.mktemp("synth")
    write_synthetic(SyntheticSpec(interactions=8000, users=160, items=120, seed=3), folder, "syn")
    ds = load_dataset("syn", folder / "syn")
    return ds, random_split(ds, seed=1), folder / "syn"


@pytest.fixture(scope="module")
def trained(synth):
    ds, split, _ = synth
    train = split.part == 0
    out = {}
    for name in ("bpr", "lightgcn"):
        m = build_model(name, ds.n_users, ds.n_items, seed=7, **FAST)
        m.fit(ds.inter_user[train], ds.inter_item[train])
        m.ledger_version = 0
        out[name] = m
    return out


def _user_request(ds, frac=0.1, seed=0):
    return user_interactions_request(ds, select_users(ds, frac, "random", seed))


def test_row_systems_match_dense_solves():
    torch.manual_seed(0)
    seg = torch.randint(0, 5, (60,))
    vec = torch.randn(60, 6)
    for cap in (3, None):  # Woodbury (width < d) and direct d×d path
        rs = RowSystems(seg, 5, cap, damping=0.7)
        kept = vec[rs.entries] * rs.weight.sqrt()[:, None]
        rs.factor(kept, 6)
        g = torch.randn(5, 6)
        x = rs.solve(g, torch.arange(5))
        for r in range(5):
            v = kept[rs.seg == r]
            h = 0.7 * torch.eye(6) + v.T @ v
            assert torch.allclose(x[r], torch.linalg.solve(h, g[r]), atol=1e-4)
        # a capped row keeps an unbiased (rescaled) sum over its entries
        if cap is not None:
            assert rs.weight.sum().item() == pytest.approx(60.0)


def test_blocks_reach_exact_block_optimum():
    """Repeated Newton steps on a block converge to the block's minimiser (gradient 0)."""
    torch.manual_seed(1)
    n_users, n_items, d = 12, 15, 4
    u = torch.randint(0, n_users, (200,))
    i = torch.randint(0, n_items, (200,))
    j = torch.randint(0, n_items, (200,))
    p0 = torch.randn(n_users, d, dtype=torch.float64)
    q0 = torch.randn(n_items, d, dtype=torch.float64)
    free = torch.arange(n_users)
    prob = _Problem((u, i, j), n_users, n_items, p0, q0, 0.5, free, hessian_cap=None)
    prob.g0u = 0.3 * torch.randn(n_users, d, dtype=torch.float64)
    prob.g0i = 0.3 * torch.randn(n_items, d, dtype=torch.float64)
    p, q = p0.clone(), q0.clone()
    for _ in range(30):
        p = prob.user_step(p, q)
    assert prob.gradient(p, q, "user")[0].norm() < 1e-8
    for _ in range(150):
        q = prob.item_step(p, q)
    assert prob.gradient(p, q, "item")[0].norm() < 1e-6
    # the objective of the block decreased monotonically to that optimum
    assert prob.objective(p, q) < prob.objective(p0, q0)


def test_assign_final_lightgcn_exact(trained, synth):
    ds, split, _ = synth
    m = trained["lightgcn"]
    target_u, target_i = torch.randn(ds.n_users, 32) * 0.1, torch.randn(ds.n_items, 32) * 0.1
    model = build_model("lightgcn", ds.n_users, ds.n_items, seed=7, dim=32, **FAST)
    train = split.part == 0
    model.set_graph(ds.inter_user[train][:500], ds.inter_item[train][:500])  # leaves isolated nodes
    stats = assign_final(model, target_u, target_i)
    u, i = model.final_embeddings()
    assert stats["cg_residual"] < 1e-5
    assert torch.allclose(u, target_u, atol=1e-4) and torch.allclose(i, target_i, atol=1e-4)
    assert m is not model


def test_retrain_is_training_from_scratch(trained, synth):
    ds, split, _ = synth
    req = _user_request(ds)
    new, rec = Retrain().unlearn(trained["bpr"], (ds, split), [req])
    task = make_task((ds, split), [req], trained["bpr"])
    ref = build_model("bpr", ds.n_users, ds.n_items, seed=7, **FAST).fit(*task.train)
    assert torch.equal(new.user_emb.weight, ref.user_emb.weight)
    assert rec.iterations == FAST["epochs"] and rec.n_forgotten == len(task.forget[0]) > 0
    assert rec.settings["model_config"]["seed"] == 7


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_alteraser_forgets_users_and_keeps_utility(trained, synth, name):
    from llmrec.evaluation import evaluate_model
    from llmrec.privacy.membership import membership_inference

    ds, split, _ = synth
    model = trained[name]
    req = _user_request(ds)
    task = make_task((ds, split), [req], model, version=3)
    new, rec = AltEraser(seed=1).unlearn(model, task)
    assert new.ledger_version == 3 and rec.ledger_version == 3 and rec.iterations >= 1
    gone = task.users_without_data
    assert gone.sum() > 0 and torch.all(new.user_embeddings()[torch.as_tensor(gone)] == 0)
    if name == "lightgcn":  # the returned model propagates over the retained graph
        assert new._graph[0].numel() == len(task.train[0])
    keys = np.unique(ds.pair_keys)
    mia = membership_inference(new.score, ds.n_items, *task.forget, *task.train, keys)
    assert mia.auc == pytest.approx(0.5)
    before = evaluate_model(model, task.retained_data())["ndcg@10"]
    after = evaluate_model(new, task.retained_data())["ndcg@10"]
    assert after > before - 0.03
    # the input model is untouched
    assert not torch.all(model.user_embeddings()[torch.as_tensor(gone)] == 0)


def test_alteraser_partial_interactions(trained, synth):
    ds, split, _ = synth
    idx = np.flatnonzero(split.part == 0)[::40]
    req = interactions_request(ds, idx)
    new, rec = AltEraser(seed=2).unlearn(trained["bpr"], (ds, split), [req])
    assert rec.n_forgotten == len(idx) and rec.info["reset_users"] == 0
    assert rec.history and rec.history[0]["active_users"] > 0  # partially forgotten users move


def test_finetune_and_reverse_bpr(trained, synth):
    from llmrec.unlearning.reverse_bpr import win_rate

    ds, split, _ = synth
    req = _user_request(ds, 0.1, seed=4)
    task = make_task((ds, split), [req], trained["bpr"])
    ft, rec = FineTune(epochs=2, seed=1).unlearn(trained["bpr"], task)
    assert rec.iterations == 2 and len(rec.history) == 2
    rb, rec = ReverseBPR(seed=1, batch_size=1024, lr=0.02).unlearn(trained["bpr"], task)
    from llmrec.models import NegativeSampler

    fu, fi = (torch.as_tensor(a) for a in task.forget)
    seen = NegativeSampler(ds.n_users, ds.n_items, *task.train_before)
    gen = torch.Generator().manual_seed(0)
    assert rec.converged and rec.info["forget_win_rate"] <= 0.5
    assert win_rate(rb, fu, fi, seen, gen) < win_rate(trained["bpr"], fu, fi, seen, gen)


def test_unlearner_guards(trained, synth):
    ds, split, _ = synth
    with pytest.raises(LlmrecError, match="handles"):
        AltEraser().unlearn(
            trained["bpr"], (ds, split), [ForgetRequest("attribute", attributes=("gender",))]
        )
    with pytest.raises(ValueError, match="unknown method"):
        make_unlearner("nope")
    assert {"retrain", "finetune", "alteraser", "lego", "reverse-bpr"} <= set(METHODS)
    assert make_unlearner("alteraser", damping=5.0).get_params()["damping"] == 5.0


def test_sample_triples_negatives_are_unseen(synth):
    ds, split, _ = synth
    m = split.part == 0
    u, i, j = sample_triples(ds.inter_user[m], ds.inter_item[m], ds.n_users, ds.n_items, 2, 0)
    seen = set(ds.pair_keys[m].tolist())
    assert not {int(a) * ds.n_items + int(b) for a, b in zip(u, j)} & seen


def test_workspace_task_follows_the_ledger(tmp_path, synth, trained):
    ds, _, folder = synth
    ws = Workspace(tmp_path / "ws", dataset="syn", data_dir=folder)
    r1 = _user_request(ws.dataset, 0.05, seed=1)
    r2 = _user_request(ws.dataset, 0.05, seed=2)
    with ws.ledger() as led:
        led.record_many([r1, r2])
    model = trained["bpr"]
    task = make_task(ws, [r2], model)
    assert task.version == 2 and len(task.requests) == 2  # v0 -> v2 covers both entries
    assert np.array_equal(task.after.keep, ws.view(2).keep)


def test_cli_unlearn_writes_checkpoint_run_and_errors(tmp_path, synth, capsys):
    import json

    from llmrec.cli.main import main

    ds, _, folder = synth
    common = ["--workspace", str(tmp_path / "ws"), "--dataset", "syn", "--data-dir", str(folder)]
    req = tmp_path / "req.jsonl"
    req.write_text(_user_request(ds, 0.05).to_json() + "\n")

    rc = main(["unlearn", "--method", "alteraser", "--request", str(req), *common])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "llmrec train --model bpr" in err[0]
    rc = main(["unlearn", "--method", "magic", "--request", str(req), *common])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "unknown method 'magic'" in err[0]
    rc = main(["attack-membership", "--method", "finetune", *common])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "no bpr model unlearned with finetune" in err[0]

    assert (
        main(["train", "--model", "bpr", "--epochs", "3", "--set", "batch_size=1024", *common]) == 0
    )
    capsys.readouterr()
    trained = tmp_path / "ws" / "artifacts" / "models" / "bpr.pt"
    original = tmp_path / "bpr-before.pt"
    original.write_bytes(trained.read_bytes())
    assert main(["unlearn", "--method", "alteraser", "--request", str(req), "--json", *common]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ledger_version"] == 1 and res["record"]["method"] == "alteraser"
    assert res["checkpoint"] == str(trained) and load_model(trained).ledger_version == 1
    run = tmp_path / "ws" / "runs"
    latest = max(run.glob("unlearn-bpr-alteraser-*"))
    cfg = json.loads((latest / "config.json").read_text())
    assert cfg["settings"]["damping"] == 30.0 and cfg["requests"][0]["kind"] == "interactions"
    assert "NDCG@10" in (latest / "results.txt").read_text()
    # the run's record names the checkpoint relative to the workspace (a copy names its own)
    recorded = json.loads((latest / "results.json").read_text())["checkpoint"]
    assert recorded == "artifacts/models/bpr.pt"
    # the same request again is recorded once; retrain of the checkpoint before it, into a
    # separate checkpoint (--checkpoint), enables the comparison
    argv = ["unlearn", "--method", "retrain", "--request", str(req), "--json", *common]
    assert main([*argv, "--checkpoint", str(original)]) == 0
    assert json.loads(capsys.readouterr().out)["ledger_version"] == 1
    assert main(["attack-membership", "--method", "alteraser", "--json", *common]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["forgotten_pairs"] > 0 and "retrain" in audit and "auc_gap" in audit
    rc = main(
        ["unlearn", "--method", "alteraser", "--request", str(req), "--set", "bogus=1", *common]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "bad parameter" in err[0]


def _planted(n_users: int = 300, seed: int = 0, plant_age: bool = False):
    """A dataset whose user embeddings carry a planted gender (and a random age, planted along
    two other directions with ``plant_age``)."""
    import pandas as pd

    from llmrec.data.dataset import Dataset
    from llmrec.data.split import Split

    rng = np.random.default_rng(seed)
    gender = rng.choice(["M", "F"], n_users)
    age = rng.choice(["20", "30", "40"], n_users)
    users = rng.integers(0, n_users, 2000)
    items = rng.integers(0, 30, 2000)
    keys = np.unique(users * 30 + items)
    ds = Dataset(
        "planted",
        keys // 30,
        keys % 30,
        None,
        None,
        np.array([f"u{i}" for i in range(n_users)], dtype=object),
        np.array([f"i{i}" for i in range(30)], dtype=object),
        pd.DataFrame({"gender": gender, "age": age}),
        pd.DataFrame(index=pd.RangeIndex(30)),
    )
    split = Split(np.zeros(len(keys), dtype=np.int8), "random", 0)
    model = build_model("bpr", n_users, 30, dim=8, seed=1)
    emb = torch.as_tensor(rng.normal(0, 1, (n_users, 8)), dtype=torch.float32)
    emb[torch.as_tensor(gender == "F"), 0] += 1.5
    if plant_age:
        emb[torch.as_tensor(age == "30"), 1] += 1.5
        emb[torch.as_tensor(age == "40"), 2] += 1.5
    with torch.no_grad():
        model.user_emb.weight.copy_(emb)
    model.ledger_version = 0
    return ds, split, model


def test_lego_reduces_planted_leakage_and_reuses_calibrations(tmp_path):
    from llmrec.privacy.attributes import attack, attribute_labels
    from llmrec.unlearning import LEGO

    ds, split, model = _planted()
    y, _ = attribute_labels(ds, "gender", min_class_size=20)
    before = attack(model.user_embeddings(), y, "mlp", folds=3)["balanced_accuracy"]
    lego = LEGO(
        epsilon=1.0,
        iterations=60,
        step=0.05,
        min_class_size=20,
        workers=2,
        cache_dir=str(tmp_path / "cache"),
    )
    both = ForgetRequest("attribute", attributes=("age", "gender"))
    new, rec = lego.unlearn(model, (ds, split), [both])
    assert sorted(rec.info["calibrated"]) == ["age", "gender"]  # two processes
    assert set(rec.info["weights"]) == {"age", "gender"}
    only = ForgetRequest("attribute", attributes=("gender",))
    g_model, g_rec = lego.unlearn(model, (ds, split), [only])
    assert g_rec.info["calibrated"] == [] and g_rec.info["cached"] == ["gender"]
    after = attack(g_model.user_embeddings(), y, "mlp", folds=3)["balanced_accuracy"]
    assert before > 0.7 and after < before - 0.15
    # item embeddings are untouched; the calibration stays in the epsilon-ball
    assert torch.equal(g_model.item_embeddings(), model.item_embeddings())
    change = (g_model.user_embeddings() - model.user_embeddings()).norm(dim=1)
    assert torch.all(change <= 1.0 * model.user_embeddings().norm(dim=1) + 1e-4)
    # a fresh instance finds the calibrations on disk
    again = LEGO(
        epsilon=1.0, iterations=60, step=0.05, min_class_size=20, cache_dir=str(tmp_path / "cache")
    )
    _, rec2 = again.unlearn(model, (ds, split), [both])
    assert rec2.info["calibrated"] == []
    with pytest.raises(LlmrecError, match="handles"):
        lego.unlearn(model, (ds, split), [ForgetRequest("user", users=("u1",))])


def test_lego_combination_keeps_every_calibration_removal():
    from llmrec.privacy.attributes import attack, attribute_labels
    from llmrec.unlearning import LEGO

    ds, split, model = _planted(plant_age=True)
    labels = {a: attribute_labels(ds, a, min_class_size=20)[0] for a in ("age", "gender")}
    u0 = model.user_embeddings()

    def leak(u):
        return {a: attack(u, y, "mlp", folds=3)["balanced_accuracy"] for a, y in labels.items()}

    before = leak(u0)
    assert before["gender"] > 0.7 and before["age"] > 0.55
    kw = dict(epsilon=1.0, iterations=60, step=0.05, min_class_size=20, workers=1)
    # alpha = 0 and no refinement: exactly the projected sum of the calibration perturbations
    plain = LEGO(combine_iterations=0, combine_refine=0, **kw)
    both = ForgetRequest("attribute", attributes=("age", "gender"))
    new, rec = plain.unlearn(model, (ds, split), [both])
    assert rec.info["weights"] == {"age": 1.0, "gender": 1.0}
    cals, info = plain.calibrations(
        u0.numpy(), labels, {a: np.ones(ds.n_users, dtype=bool) for a in labels}
    )
    assert info["cached"] == ["age", "gender"]
    x0 = u0.numpy()
    delta = sum(c["users"] - x0 for c in cals.values())
    radius = 1.0 * np.linalg.norm(x0, axis=1, keepdims=True)
    scale = np.minimum(
        1.0, radius / np.maximum(np.linalg.norm(delta, axis=1, keepdims=True), 1e-12)
    )
    np.testing.assert_allclose(new.user_embeddings().numpy(), x0 + delta * scale, atol=1e-5)
    # the combination keeps both removals: each attribute far below where it started
    after = leak(LEGO(**kw).unlearn(model, (ds, split), [both])[0].user_embeddings())
    assert after["gender"] < before["gender"] - 0.15
    assert after["age"] < before["age"] - 0.1
