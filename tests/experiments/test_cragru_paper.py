"""The paper protocol beside the toolkit's: forget split, re-split, accounting, one full run."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data.split import TEST, TRAIN, VALID
from llmrec.experiments import cragru_paper as cp
from llmrec.forget import registry as stages
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm


def test_forget_split_keeps_the_first_interaction(tiny):
    users = cp.forget_users(tiny.n_users, 0.34, seed=3)
    assert len(users) == 2 and np.array_equal(users, cp.forget_users(tiny.n_users, 0.34, 3))
    idx = cp.all_but_one(tiny, users)
    for u in users:
        mine = np.flatnonzero(tiny.inter_user == u)
        assert set(idx[tiny.inter_user[idx] == u]) == set(mine[1:])
    assert not np.isin(tiny.inter_user[idx], np.setdiff1d(np.arange(tiny.n_users), users)).any()


def test_resplit_partitions_the_kept_interactions(ml100k):
    keep = np.ones(ml100k.n_inter, bool)
    keep[::7] = False
    part = cp.resplit(ml100k, keep, seed=5)
    assert (part[~keep] == -1).all()
    counts = np.bincount(part[keep], minlength=3) / keep.sum()
    assert np.allclose(counts, [0.8, 0.1, 0.1], atol=0.02)
    assert np.array_equal(part, cp.resplit(ml100k, keep, 5))
    assert not np.array_equal(part, cp.resplit(ml100k, keep, 6))
    for u in (0, 10, 500):  # per user: RecBole's 8:1:1 rounding
        p = part[(ml100k.inter_user == u) & keep]
        n = len(p)
        assert (p == TEST).sum() == max(1, int(0.1 * n)) and (p == VALID).sum() >= 1
        assert (p == TRAIN).sum() == n - (p != TRAIN).sum()


def test_paper_accounting_scores_missing_and_short_lists_zero():
    truth = [np.array([5]), np.array([1, 2]), np.array([3]), np.array([4])]
    lists = {0: np.array([5, 9, 8]), 1: np.array([2, 7, 1]), 2: np.array([3, 0])}
    m = cp.list_metrics(lists, truth, np.arange(4), list_len=3)
    assert m["hit@10"].tolist() == [1.0, 1.0, 0.0, 0.0]  # user 2: short list, user 3: none
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg@10"][0] == pytest.approx(1.0)
    assert m["ndcg@10"][1] == pytest.approx((1 + 1 / np.log2(4)) / ideal)


@pytest.mark.parametrize("llm", [False, True])
def test_side_by_side_run(tmp_path, llm, monkeypatch):
    # only the stages this run needs (no adapters in these workspaces)
    keep = tuple(s for s in stages.STAGES if s.name != "adapters")
    monkeypatch.setattr(stages, "STAGES", keep)
    data_ws = small_workspace(tmp_path / "data")
    lm = tiny_lm(data_ws, tmp_path / "lm") if llm else None
    cfg = cp.ProtocolConfig(
        fraction=0.1,
        n_candidates=10,
        list_len=5,
        H=10,
        k=3,
        llm=llm,
        seed=3,
        cf_params={"epochs": 3, "dim": 8},
        encoder="cf",
        lm=str(lm) if lm else None,
    )
    res = cp.run_protocols(
        tmp_path / "root", cfg, dataset="syn", data_dir=str(data_ws.config["data_dir"])
    )
    tk, pp = res["protocols"]["toolkit"], res["protocols"]["paper"]
    names = {f"candidates[{s}]" for s in cfg.sources} | {"retrain[bpr]"}
    if llm:
        names |= {f"llm[{s}]" for s in cfg.sources}
    assert names == set(tk["methods"]) == set(pp["methods"])
    n_forget = pp["setup"]["forget_users"]
    assert n_forget == 6 and tk["setup"]["forget_users"] == 6
    # paper: every user is scored, the forget users are not served and count 0
    assert pp["users"] == 60 and pp["served"] == 60 - n_forget
    assert tk["served"] == tk["users"]  # toolkit: forget users keep being served
    assert pp["sources"]["bpr-original"]["note"] == "includes forgotten data"
    assert "note" not in pp["sources"]["bpr"] and pp["sources"]["bpr"]["exact"]
    assert pp["setup"]["forget_stages"]["candidate-source"]["sources"]["bpr"]["retrained"]
    for side in (tk, pp):
        key = "candidates: bpr-original - bpr"
        for group in ("all", "forget users"):
            assert set(side["paired_leaky_minus_exact"][group][key]) == {"hit@10", "ndcg@10"}
        assert len(side["dp"]["ratios"]) == 3 and sum(side["dp"]["ratios"]) == pytest.approx(1)
        for m in side["methods"].values():
            assert 0 <= m["ndcg@10"] <= m["hit@10"] <= 1
    if llm:  # the prior weight is tuned on VALID, per protocol
        for side in (tk, pp):
            assert side["blend"]["tuned_on"] == "valid ndcg@10"
            assert side["blend_weight"] in cp.PAPER_BLEND_GRID
    # Retrain (paper) is scored on its own split: users without a test item there drop out
    assert pp["retrain"]["split"].startswith("retained data's own")
    text = cp.format_protocols(res)
    assert "Table II CRAGRU (paper)" in text and "0.7116" in text
    assert "includes forgotten data" in text


def test_run_cragru_protocol_paper_refuses_a_used_root(tmp_path, tiny_dir, capsys):
    import importlib.util
    from pathlib import Path

    from llmrec.data.requests import ForgetRequest
    from llmrec.workspace import Workspace

    ws = Workspace(tmp_path / "root" / "toolkit", dataset="tiny", data_dir=tiny_dir)
    with ws.ledger() as led:
        led.record(ForgetRequest("user", users=("u1",)))
    path = Path(__file__).resolve().parents[2] / "scripts" / "run_cragru.py"
    spec = importlib.util.spec_from_file_location("run_cragru_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--protocol", "paper", "--workspace", str(tmp_path / "root"), "--dataset", "tiny"]
    code = mod.main([*argv, "--data-dir", str(tiny_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "already holds forget requests" in err[0]
