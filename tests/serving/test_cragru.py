"""The CRAGRU pipeline end to end on a small synthetic workspace (store, LM, adapters, CLI)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.errors import ArtifactError, DataError
from llmrec.evaluation.paired import paired_difference
from llmrec.experiments.cragru_scenario import ScenarioConfig, format_results, run_scenario
from llmrec.forget.runner import forget
from llmrec.llm.adapters import tune_adapters
from llmrec.serving.cragru import CragruOptions, CragruPipeline, default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    root = tmp_path_factory.mktemp("cragru")
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4)
    tune_adapters(ws, adapter_config(lm.resolve()))
    return ws


def run_cli(capsys, ws, *argv):
    code = main([*argv, "--workspace", str(ws.root), "--json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else None)


@pytest.mark.parametrize("mode", ["likelihood", "json", "constrained"])
def test_recommend_cli_every_mode(ready, capsys, mode):
    ws = ready
    user = str(ws.dataset.user_tokens[0])
    code, res = run_cli(
        capsys,
        ws,
        "recommend",
        "--pipeline",
        "cragru",
        "--user",
        user,
        "--mode",
        mode,
        "--strategy",
        "diversity",
        "--show-prompt",
    )
    assert code == 0 and res["user"] == user and len(res["items"]) == 10
    assert set(res["items"]) <= set(res["candidates"])
    assert "history" in res["prompt"] and res["prompt"].endswith('{"')


def test_bench_llm_reports_users_per_second_per_mode(ready, capsys):
    import argparse

    from scripts.benchmarks.generation import configure, run

    p = argparse.ArgumentParser()
    configure(p)
    args = p.parse_args(["--workspace", str(ready.root), "--users", "6", "--batch-size", "3"])
    assert run(args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["mode"] for x in lines] == ["likelihood", "json", "constrained"]
    assert all(x["users"] == 6 and x["users_per_second"] > 0 and x["adapters"] for x in lines)


def test_pipeline_groups_users_by_shard_and_matches_single_calls(ready):
    ws = ready
    pipe = CragruPipeline(ws, CragruOptions(history=20))
    users = [0, 5, 9, 17]
    together = pipe.recommend(users)
    alone = [pipe.recommend([u])[0] for u in users]
    for a, b in zip(together, alone):
        assert a.user == b.user and a.items.tolist() == b.items.tolist()


def test_scenario_writes_results_and_never_outputs_forgotten_items(ready):
    ws = ready
    item = ForgetRequest("item", items=(str(ws.dataset.item_tokens[3]),))
    forget(ws, [item])
    s = run_scenario(
        ws, ScenarioConfig(fraction=0.1, n_shards=3, epochs=2, encoder="cf", neighbours=3)
    )
    assert s["forgotten_items_output"] == 0
    assert s["stages"]["adapters"]["retuned"]  # the forget set touched the shards
    for m in (
        "llm_likelihood",
        "llm_likelihood_pure",
        "llm_json",
        "llm_constrained",
        "candidates",
        "bpr_retrained",
    ):
        assert s["methods"][m]["all"]["n_users"] == s["users"]["all"] > 0
    assert set(s["quality"]) >= {"llm_ndcg@10", "candidates_ndcg@10", "bpr_retrained_ndcg@10"}
    paired = s["quality"]["paired_llm_minus_candidates"]
    assert paired["n_users"] == s["users"]["all"]
    assert paired["mean_diff"] == pytest.approx(
        s["quality"]["llm_ndcg@10"] - s["quality"]["candidates_ndcg@10"], abs=1e-9
    )
    assert paired["wins"] + paired["losses"] + paired["ties"] == paired["n_users"]
    assert isinstance(s["quality"]["llm_beats_candidates_significant"], bool)
    run = ws.root / s["run_dir"].split(str(ws.root) + "/")[-1]
    for f in ("config.json", "versions.json", "results.json", "rankings.jsonl"):
        assert (run / f).is_file()
    rows = [json.loads(x) for x in (run / "rankings.jsonl").read_text().splitlines()]
    assert all(str(ws.dataset.item_tokens[3]) not in r["items"] for r in rows)
    assert "NDCG@10" in format_results(s)
    # the tuned blend is served by default from now on, the cold users' weight to them
    pipe = CragruPipeline(ws)
    assert pipe.blend == s["blend"]["valid_tuned_blend"]
    cold = s["blend"]["cold_users"]  # the forget users keep no train interaction
    assert cold["users"] >= 10 and pipe.served_blend.cold_weight == cold["blend"]
    curve = {float(w): v for w, v in cold["valid_ndcg@10"].items()}
    assert curve[cold["tuned_blend"]] == max(curve.values())
    # their own weight only when it beats the common one on their VALID part
    own = cold["blend"] == cold["tuned_blend"] != pipe.blend
    assert own == (cold["valid_gain_over_common"]["p"] < 0.05 and cold["blend"] != pipe.blend)
    assert cold["blend"] in (cold["tuned_blend"], pipe.blend)
    lens = np.array([len(pipe.store.history(v)[0]) for v in range(ws.dataset.n_users)])
    u = int(np.flatnonzero(~pipe.view.forgotten_users & (lens == 0))[0])
    assert pipe.user_blend(u) == cold["blend"]


def test_group_weight_needs_a_significant_valid_gain():
    from llmrec.serving.cragru import group_weight

    rng = np.random.default_rng(0)
    common = rng.uniform(0, 0.3, 47)
    assert group_weight(1.0, 16.0, common + 0.05, common)[0] == 1.0  # a consistent gain
    noisy = common + rng.normal(0.005, 0.1, 47)  # a small mean gain, mostly noise
    w, test = group_weight(1.0, 16.0, noisy, common)
    assert w == 16.0 and test["p"] >= 0.05
    assert group_weight(1.0, 16.0, common - 0.05, common)[0] == 16.0  # a consistent loss


def test_served_blend_weighs_users_by_history_length(ready):
    from llmrec.serving.cragru import ServedBlend, load_blend, save_blend

    b = ServedBlend(4.0, 0.5, 10)
    assert (b.for_history(10), b.for_history(11), ServedBlend(4.0).for_history(0)) == (0.5, 4, 4)
    ws = ready
    from llmrec.llm.adapters import adapters_root

    path = adapters_root(ws) / "blend.json"
    old = path.read_bytes() if path.is_file() else None
    try:
        # every user of the small workspace counts as cold under a large max_train
        save_blend(ws, 4.0, 0, 0.1, 0.1, {"max_train": 10**6, "blend": 0.5})
        assert load_blend(ws) == ServedBlend(4.0, 0.5, 10**6)
        pipe = CragruPipeline(ws)
        users = [0, 5, 9]
        got = [r.items.tolist() for r in pipe.recommend(users)]
        assert got == [r.items.tolist() for r in pipe.recommend(users, blend=0.5)]
        assert pipe.blend == 4.0 and all(pipe.user_blend(u) == 0.5 for u in users)
    finally:
        if old is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(old)


def test_forgotten_users_are_not_served_and_stale_adapters_refused(ready, tmp_path):
    # a copy: the request this test leaves unapplied would make every later test's serving
    # refuse the module's workspace
    shutil.copytree(ready.root, tmp_path / "ws")
    ws = Workspace(tmp_path / "ws")
    pipe = CragruPipeline(ws)
    gone = (
        int(np.flatnonzero(pipe.view.forgotten_users)[0])
        if pipe.view.forgotten_users.any()
        else None
    )
    if gone is not None:
        with pytest.raises(DataError):
            pipe.recommend([gone])
    # a request recorded but not applied to the adapters makes serving refuse
    with ws.ledger() as led:
        led.record(ForgetRequest("item", items=(str(ws.dataset.item_tokens[5]),)), ["adapters"])
    with pytest.raises(ArtifactError):
        CragruPipeline(ws, store=pipe.store)


def test_paired_difference_matches_hand_computation():
    a = np.array([0.5, 0.2, 0.0, 0.9, 0.4])
    b = np.array([0.4, 0.2, 0.1, 0.6, 0.1])
    d = paired_difference(a, b)
    diff = a - b
    assert d["mean_diff"] == pytest.approx(diff.mean())
    assert d["std_err"] == pytest.approx(diff.std(ddof=1) / np.sqrt(5))
    assert (d["wins"], d["losses"], d["ties"]) == (3, 1, 1)
    assert 0 < d["t_p_value"] < 1 and 0 < d["wilcoxon_p_value"] <= 1
    scaled = paired_difference(a, b, 0.5)
    assert scaled["mean_diff"] == pytest.approx((a - 0.5 * b).mean())


def test_recommend_cli_serves_with_the_cpu_options(ready, capsys):
    ws = ready
    user = str(ws.dataset.user_tokens[0])
    code, res = run_cli(capsys, ws, "recommend", "--user", user, "--quantize", "int8",
                        "--prefix-cache", "--mode", "likelihood")  # fmt: skip
    assert code == 0 and len(res["items"]) == 10
    assert set(res["items"]) <= set(res["candidates"])
