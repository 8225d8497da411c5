"""The real LLM path in the comparison harness (tiny LM, small synthetic data): it is judged
against its own from-scratch rebuild (bias exactly 0, not flagged) and its own pre-forget
serving, and the zero-shot variant (no adapters) is reported beside it."""

from __future__ import annotations

import json

import pytest

from llmrec.experiments.compare import llm as compare_llm
from llmrec.experiments.compare import run_compare
from llmrec.serving.cragru import BLEND_GRID, default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    """A small workspace, its tiny LM, and the LLM path built with tiny settings."""
    root = tmp_path_factory.mktemp("cmp-llm")
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))

    def small_build(sub, lm_dir, seed, adapters=True, cache_dir=None, source="ease"):
        # a CF-encoded store: its embeddings hold user data, so no cache is shared (cache_dir
        # is the text encoder's)
        from llmrec.llm.adapters import tune_adapters
        from retrieval.store import RetrievalStore

        RetrievalStore.build(
            sub, encoder="cf", n_candidates=20, seed=seed, n_clusters=4, source=source
        )
        if adapters:
            tune_adapters(sub, adapter_config(lm.resolve(), epochs=1))

    mp = pytest.MonkeyPatch()
    mp.setattr(compare_llm, "build_llm_path", small_build)
    try:
        yield ws
    finally:
        mp.undo()


HP = {"dim": 8, "epochs": 10, "batch_size": 256, "n_neg": 4}


@pytest.fixture(scope="module")
def run(patched):
    return run_compare(
        patched,
        ["random:10%users"],
        ["retrain", "cragru", "cragru-zeroshot", "candidates"],
        seeds=[3],
        completeness=False,
        model_overrides=HP,
    )


def test_llm_path_is_exact_and_unbiased_against_its_own_gold(run):
    seed = run["scenarios"]["random:10%users"][0]
    results = json.loads(open(run["results"]).read())
    flags = results["scenarios"]["random:10%users"]["bias_flags"]
    for name in ("cragru", "cragru-zeroshot"):
        m = seed["methods"][name]
        assert m["completeness"]["exact"] is True
        gold = m["bias"]["vs_gold"]
        assert gold["neighbours"]["delta_ndcg"] == 0 and gold["neighbours"]["divergence"] == 0
        assert gold["controls"]["divergence"] == 0 and gold["excess"]["delta_ndcg"] == 0
        assert not flags[name]["biased"]
        assert "rebuilt from scratch" in m["references"]["gold"]
        assert "before the request" in m["references"]["original"]
        assert m["collateral"]["n_users"] > 0
        assert m["info"]["gold_serving"].startswith("the method's own serving")
        # served as `llmrec recommend` serves: the prior weight chosen on VALID at each state
        blend = m["info"]["blend"]
        curve = {float(w): v for w, v in blend["after_valid_ndcg@10"].items()}
        assert set(curve) == set(BLEND_GRID) and blend["gold"] == blend["after"]
        assert curve[blend["after"]] == max(curve.values())
        assert blend["original"] in BLEND_GRID
    assert seed["methods"]["cragru"]["fairness"]["shard_gf"]["own_shards"]
    md = open(run["run_dir"] + "/results.md").read()
    assert "adapters vs zero-shot" in md


def test_candidate_order_is_the_control_with_the_llm_gain_paired_per_user(run):
    seed = run["scenarios"]["random:10%users"][0]
    ctrl = seed["methods"]["candidates"]
    assert ctrl["family"] == "llm" and ctrl["completeness"]["exact"] is True
    assert ctrl["seconds"] > 0 and "retrieval" in ctrl["info"]["stage_seconds"]
    assert ctrl["bias"]["vs_gold"]["neighbours"]["divergence"] == 0
    assert "candidates" not in ctrl.get("gain_over_candidates", {})
    md = open(run["run_dir"] + "/results.md").read()
    assert "over its candidate generator's own order" in md
    for name in ("cragru", "cragru-zeroshot"):
        g = seed["methods"][name]["gain_over_candidates"]
        utility = seed["methods"][name]["utility"]["all"]
        assert g["n_users"] == utility["n_users"] == ctrl["utility"]["all"]["n_users"]
        assert g["mean_diff"] == pytest.approx(
            utility["ndcg@10"] - ctrl["utility"]["all"]["ndcg@10"], abs=1e-9
        )
        assert 0 <= g["t_p_value"] <= 1 and f"{name} (seed 3)" in md


def test_llm_path_answers_a_request_stream(patched):
    res = run_compare(
        patched, ["stream:2"], ["cragru", "sisa", "candidates"], seeds=[3], model_overrides=HP
    )
    seed = res["scenarios"]["stream:2"][0]
    llm = seed["methods"]["cragru"]
    assert llm["family"] == "llm" and len(llm["requests"]) == 2
    assert llm["initial_seconds"] > 0 and all(r["seconds"] > 0 for r in llm["requests"])
    assert llm["requests"][1]["cumulative_seconds"] == pytest.approx(
        sum(r["seconds"] for r in llm["requests"])
    )
    ctrl = seed["methods"]["candidates"]
    assert len(ctrl["requests"]) == 2 and all(r["seconds"] > 0 for r in ctrl["requests"])


class _FakePipe:
    """Just enough of a CragruPipeline for the serving helpers: ranks by ``order``."""

    def __init__(self, order, n_users=6, n_items=5):
        from types import SimpleNamespace

        import numpy as np

        self.order = np.asarray(order)
        self.blend = 0.0
        self.view = SimpleNamespace(
            forgotten_users=np.zeros(n_users, bool), forgotten_items=np.zeros(n_items, bool)
        )
        self.ws = SimpleNamespace(dataset=SimpleNamespace(n_items=n_items))
        self.store = SimpleNamespace(candidate_scores=lambda us: np.ones((len(us), n_items)))

    def context(self, user):
        from types import SimpleNamespace

        return SimpleNamespace(candidates=self.order)

    def recommend(self, users, mode, contexts=None, blend=None):
        from types import SimpleNamespace

        assert blend == 0.0  # the comparison blends the LM's own scores itself
        return [SimpleNamespace(items=self.order[:3]) for _ in users]


def test_gold_serving_is_reused_only_when_a_spot_check_agrees():
    import numpy as np

    users = np.arange(6)
    assert compare_llm._same_rankings(_FakePipe([0, 1, 2]), _FakePipe([0, 1, 2]), users, 4)
    assert not compare_llm._same_rankings(_FakePipe([0, 1, 2]), _FakePipe([0, 2, 1]), users, 4)


def test_scratch_workspaces_are_deleted_at_the_end(run, patched):
    """The LLM path's scratch workspaces hold user data: gone after the run unless kept."""
    from pathlib import Path

    run_dir = Path(run["run_dir"])
    assert not (run_dir / compare_llm.SCRATCH).exists()
    assert not list(run_dir.rglob("workspace.json")) and not list(run_dir.rglob("*.sqlite"))
    assert patched.kept_workspaces() == []
    info = run["scenarios"]["random:10%users"][0]["methods"]["cragru"]["info"]
    assert info["workspace"].startswith(compare_llm.SCRATCH + "/")
