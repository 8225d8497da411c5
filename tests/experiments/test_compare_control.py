"""The LLM path's control in the comparison harness over hybrid candidates (real text store,
tiny LM): ``compare --source hybrid``."""

from __future__ import annotations

from llmrec.experiments.compare import run_compare
from llmrec.llm.recipe import serving
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm

HP = {"dim": 8, "epochs": 10, "batch_size": 256, "n_neg": 4}


def test_candidate_control_over_hybrid_candidates(tmp_path):
    """``compare --source hybrid``: the control ranks the hybrid lists of the length
    the LLM re-ranks, is exact against its from-scratch rebuild, and says which source."""
    ws = small_workspace(tmp_path)
    tiny_lm(ws, default_lm_dir(ws))
    res = run_compare(
        ws,
        ["random:10%users"],
        ["retrain", "candidates"],
        seeds=[3],
        completeness=False,
        model_overrides=HP,
        candidate_source="hybrid",
    )
    ctrl = res["scenarios"]["random:10%users"][0]["methods"]["candidates"]
    assert ctrl["info"]["candidate_source"] == "hybrid"
    assert ctrl["info"]["n_candidates"] == serving(default_lm_dir(ws)).n_candidates
    assert ctrl["completeness"]["exact"] is True and "hybrid" in ctrl["references"]["gold"]
    assert res["config"]["candidate_source"] == "hybrid"
