"""Per-method references, the retrain check, CURE4Rec fairness, request streams and the CLI
flags of the comparison harness, on a tiny synthetic dataset (no LLM: a stand-in LLM-family
runner exercises the harness's handling of a method's own gold and original)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.evaluation.fairness import active_mask, cure_ndcg
from llmrec.experiments import compare
from llmrec.experiments.compare import LLMMethod, MethodOutput, run_compare
from llmrec.unlearning.registry import METHODS, register_method, unregister_method
from llmrec.workspace import Workspace

HP = {"dim": 8, "epochs": 20, "batch_size": 256, "lr": 0.05, "n_neg": 4}
SEEN: dict = {}


def _dataset(folder):
    """Two communities of 30 users over 20 items each (8 items per user)."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token"]
    for g in "AB":
        for u in range(30):
            lines += [f"{g}{u}\t{g.lower()}{i}" for i in sorted(rng.choice(20, 8, replace=False))]
    (folder / "two.inter").write_text("\n".join(lines) + "\n")
    return folder


class FakeLLM(LLMMethod):
    """An exactly unlearnable 'LLM path': its gold is itself (the rebuild gives the same
    rankings); its original is the trained base model, shifted so that it differs."""

    name = "fake-llm"
    exact = True

    def run(self, ctx) -> MethodOutput:
        SEEN["verify_exact"] = ctx.cache["verify_exact"]
        SEEN["reference_users"] = np.asarray(ctx.cache["reference_users"])
        score = compare.run_method(ctx, "retrain").score_fn
        return MethodOutput(
            name=self.name,
            family="llm",
            seconds=0.01,
            peak_memory_mb=0.0,
            score_fn=score,
            exact=True,
            gold_fn=score if ctx.cache["verify_exact"] else None,
            original_fn=ctx.original.score,
            references={"gold": "itself, rebuilt", "original": "the trained base model"},
            user_shards=np.arange(ctx.ws.dataset.n_users) % 3,
        )


@contextlib.contextmanager
def registered(cls):
    """``cls`` in the one method registry while the block runs (as it was before, after)."""
    had = cls.name in METHODS
    register_method(cls)
    try:
        yield cls
    finally:
        if not had:
            unregister_method(cls.name)


@pytest.fixture()
def fake_llm_registered():
    with registered(FakeLLM):
        yield FakeLLM


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    return Workspace(root / "ws", dataset="two", data_dir=_dataset(root / "data"))


@pytest.fixture(scope="module")
def run(ws):
    with registered(FakeLLM):
        yield run_compare(
            ws,
            ["random:10%users"],
            ["retrain", "finetune", "fake-llm"],
            seeds=[5],
            model_overrides=HP,
            fairness_ndcg="cure",
            completeness=False,
        )


def test_llm_family_is_judged_against_its_own_references(run):
    seed = run["scenarios"]["random:10%users"][0]
    llm = seed["methods"]["fake-llm"]
    assert llm["references"]["gold"] == "itself, rebuilt"
    gold = llm["bias"]["vs_gold"]
    assert gold["neighbours"]["delta_ndcg"] == 0 and gold["excess"]["divergence"] == 0
    # against its own original it did move (the original model differs from the retrain)
    assert llm["bias"]["vs_original"]["neighbours"]["divergence"] > 0
    assert llm["collateral"]["n_users"] > 0
    results = json.loads(open(run["results"]).read())
    assert not results["scenarios"]["random:10%users"]["bias_flags"]["fake-llm"]["biased"]
    # embedding unlearners keep the retrained base model as their gold
    assert seed["methods"]["finetune"]["references"]["gold"].startswith("retrain")
    # the reference users are exactly the neighbours and controls
    want = np.union1d(seed["neighbours"], seed["controls"])
    assert np.array_equal(SEEN["reference_users"], want)


def test_retrain_check_is_reported(run):
    seed = run["scenarios"]["random:10%users"][0]
    c = seed["retrain_check"]
    assert c["tolerance"] == compare.RETRAIN_TOLERANCE
    assert c["ok"] == (c["retrain_valid_ndcg@10"] >= 0.9 * c["original_valid_ndcg@10"])
    assert "Retrain check" in open(run["run_dir"] + "/results.md").read()


def test_retrain_check_warns_on_a_broken_gold(ws):
    """A 'retrain' that ranks at random must be flagged; the original itself passes."""
    from llmrec.models.training import retained_data, train_model

    view = ws.view()
    alive = np.arange(ws.dataset.n_users)

    def scramble(users):
        return np.random.default_rng(0).random((len(users), ws.dataset.n_items))

    model = train_model(ws, "bpr", seed=1, data=retained_data(ws, view), **HP)
    c = compare.retrain_check(ws, view, scramble, model.score, alive, None)
    assert not c["ok"] and "below the original" in c["warning"]
    assert compare.retrain_check(ws, view, model.score, model.score, alive, None)["ok"]


def test_fairness_recomputed_from_per_user_data(run, ws):
    from llmrec.data.parts import part_pairs
    from llmrec.data.split import TRAIN

    seed = run["scenarios"]["random:10%users"][0]
    forget = np.asarray(seed["forget_users"])
    keep = ws.view().keep & ~np.isin(ws.dataset.inter_user, forget)
    counts = np.bincount(
        part_pairs(ws.dataset, ws.split, TRAIN, keep=keep)[0], minlength=ws.dataset.n_users
    )
    for name, shards in (("fake-llm", np.arange(ws.dataset.n_users) % 3), ("finetune", None)):
        f = seed["methods"][name]["fairness"]
        assert f["ndcg"] == "cure" and f["shard_gf"]["own_shards"] == (shards is not None)
        if shards is None:
            from llmrec.evaluation.fairness import default_shards

            shards = default_shards(ws.dataset.n_users, 5)
        users = np.asarray(f["per_user"]["users"])
        per = np.asarray(f["per_user"]["ndcg"])
        act = active_mask(counts)[users]
        assert act.sum() == f["a_igf"]["n_active"] > 0
        assert f["a_igf"]["value"] == pytest.approx(per[act].mean() - per[~act].mean())
        means = [per[shards[users] == s].mean() for s in np.unique(shards[users])]
        assert f["shard_gf"]["value"] == pytest.approx(np.var(means))
    md = open(run["run_dir"] + "/results.md").read()
    assert "A-IGF" in md and "shardGF" in md


def test_cure_ndcg_normalises_by_every_test_item():
    topk = np.array([[3, 1, 7], [5, 6, 8]])
    # user 0: 4 test items, hits at ranks 1 and 2 -> (1 + 1/log2 3) / sum_{i<4} 1/log2(i+2)
    got = cure_ndcg(
        topk, np.array([0, 1]), np.array([0, 0, 0, 0, 1]), np.array([3, 1, 9, 10, 8]), 3
    )
    idcg = sum(1 / np.log2(i + 2) for i in range(4))
    assert got[0] == pytest.approx((1 + 1 / np.log2(3)) / idcg)
    assert got[1] == pytest.approx((1 / np.log2(4)) / 1.0)


def test_active_users_are_the_top_five_percent():
    counts = np.array([0, *range(1, 41)])  # 40 users with data: 2 active
    assert np.flatnonzero(active_mask(counts)).tolist() == [39, 40]


def test_cli_no_exact_check_and_set_reach_the_harness(ws, capsys, fake_llm_registered):
    sets = [f"--set={k}={json.dumps(v)}" for k, v in HP.items()]
    rc = main(
        ["compare", "--workspace", str(ws.root), "--scenario", "random:10%users",
         "--methods", "fake-llm", "--no-exact-check", "--json", "--seed", "5", *sets]
    )  # fmt: skip
    assert rc == 0 and SEEN["verify_exact"] is False
    out = json.loads(capsys.readouterr().out)
    results = json.loads(open(out["results"]).read())
    seed = results["scenarios"]["random:10%users"]["seeds"][0]
    assert seed["original_config"]["epochs"] == HP["epochs"]
    assert results["config"]["verify_exact"] is False
    llm = seed["methods"]["fake-llm"]
    assert "vs_gold" not in llm["bias"] and "vs_original" in llm["bias"]


def test_stream_scenario_records_every_request(ws):
    res = run_compare(
        ws,
        ["stream:3"],
        ["retrain", "alteraser", "sisa"],
        seeds=[5],
        model_overrides={**HP, "epochs": 5},
    )
    seed = res["scenarios"]["stream:3"][0]
    assert seed["stream"] and len(seed["stream_users"]) == 3
    for m in ("retrain", "alteraser", "sisa"):
        rows = seed["methods"][m]["requests"]
        assert len(rows) == 3
        cum = [r["cumulative_seconds"] for r in rows]
        assert cum == pytest.approx(np.cumsum([r["seconds"] for r in rows]))
        assert all(0 <= r["ndcg@10"] <= 1 for r in rows)
    assert all(r["n_retrained"] == 1 for r in seed["methods"]["sisa"]["requests"])
    assert seed["methods"]["sisa"]["initial_seconds"] > 0
    assert any(p.endswith("stream_3_cumulative_seconds.png") for p in res["images"])
    assert "seconds per request" in open(res["run_dir"] + "/results.md").read()


def test_cli_rejects_an_unknown_set_key(ws, capsys):
    rc = main(["compare", "--workspace", str(ws.root), "--scenario", "random:10%users",
               "--methods", "retrain", "--set", "no_such_option=1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "no_such_option" in err[0]
