"""Audit power for the LoRA adapters: a shard tuned on data that was forgotten since, or left at
an older ledger version, fails ``llmrec audit`` and is named; applying the stage clears it."""

from __future__ import annotations

import json
import shutil

from llmrec.data.context import StageContext
from llmrec.data.requests import ForgetRequest
from llmrec.forget import registry as stages
from llmrec.forget import runner as fp
from llmrec.llm.adapters import adapters_root, shard_dir, tune_adapters
from llmrec.llm.audit import audit
from llmrec.llm.shards import shard_of
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm


def audit_adapters(ws) -> list[dict]:
    """The adapters' forget audit at the ledger's newest version."""
    with ws.ledger() as led:
        return audit(StageContext.open(ws, led))


def test_adapter_audit_detects_forgotten_training_data(tmp_path, monkeypatch):
    ws = small_workspace(tmp_path)
    cfg = adapter_config(tiny_lm(ws, tmp_path / "lm"))
    tune_adapters(ws, cfg)
    assert audit_adapters(ws) == []
    # forget a user without running the adapters stage: its shard still holds the user's data
    user = str(ws.dataset.user_tokens[0])
    shard = int(shard_of(ws.dataset.user_tokens, cfg.n_shards, cfg.seed)[0])
    with ws.ledger() as led:
        led.record(ForgetRequest("user", users=(user,)), stages=["adapters"])
    found = audit_adapters(ws)
    names = {f["artifact"] for f in found}
    assert f"adapter/shard-{shard:03d}" in names
    assert any("tuned on other data" in f["problem"] for f in found)
    assert any(f["problem"].startswith("stale") for f in found)
    # the stage re-tunes the touched shard; the audit is clean again
    monkeypatch.setattr(stages, "STAGES", stages.select("adapters"))
    fp.resume(ws)
    assert audit_adapters(ws) == []
    # a planted manifest claiming other training data is caught as well
    man = shard_dir(adapters_root(ws), shard) / "llmrec_shard.json"
    m = json.loads(man.read_text())
    man.write_text(json.dumps(m | {"data_hash": "0" * 64}))
    assert [f["artifact"] for f in audit_adapters(ws)] == [f"adapter/shard-{shard:03d}"]


def test_served_lists_are_logged_and_scrubbed(tmp_path, capsys):
    from llmrec.cli.main import main
    from llmrec.forget.audit import run_audit
    from llmrec.serving.cragru import default_lm_dir
    from llmrec.serving.served_log import read_log
    from retrieval.store import RetrievalStore

    ws = small_workspace(tmp_path)
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4)
    tune_adapters(ws, adapter_config(lm.resolve()))
    pre_forget = tmp_path / "pre-forget-adapters"
    shutil.copytree(adapters_root(ws), pre_forget)
    user = str(ws.dataset.user_tokens[1])
    argv = [
        "recommend",
        "--pipeline",
        "cragru",
        "--user",
        user,
        "--workspace",
        str(ws.root),
        "--json",
    ]
    assert main(argv) == 0
    shown = json.loads(capsys.readouterr().out)["items"]
    (entry,) = read_log(ws)
    assert entry["user"] == user and entry["items"] == shown
    fp.forget(ws, [ForgetRequest("item", items=(shown[0],))])
    assert shown[0] not in read_log(ws)[0]["items"]
    res = run_audit(ws)
    assert res["ok"], res["violations"]
    # adapters named on the command line pass the same ledger check: the pre-forget copy was
    # tuned on the forgotten item's interactions (issue 27, item 7); the workspace's own pass
    assert main([*argv, "--adapters", str(pre_forget)]) == 2
    assert "tuned on other data than the ledger" in capsys.readouterr().err
    assert main([*argv, "--adapters", str(adapters_root(ws))]) == 0
