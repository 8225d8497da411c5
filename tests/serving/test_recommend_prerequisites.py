"""``llmrec recommend`` from a fresh workspace: every missing prerequisite named in one line with
the one command that builds them; a base LM a comparison built is reused; serving without
adapters is said, not silent."""

from __future__ import annotations

import json

from llmrec.cli.main import main
from llmrec.serving.prerequisites import built_base_lm
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm
from retrieval.store import RetrievalStore


def test_fresh_workspace_names_every_prerequisite_then_reuses_the_compare_lm(tmp_path, capsys):
    ws = small_workspace(tmp_path)
    user = str(ws.dataset.user_tokens[0])
    argv = ["recommend", "--user", user, "--workspace", str(ws.root)]
    assert main([*argv, "--dataset", "syn"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "recommend needs the retrieval store and a base LM" in err[0]
    assert (
        f"'llmrec index build --workspace {ws.root} && llmrec build-lm --workspace {ws.root}'"
        in err[0]
    )
    # a base LM built by a comparison run (catalogue text only) is served, not rebuilt
    RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4)
    lm = tiny_lm(ws, ws.root / "runs" / "compare-20260101-000000" / "base-lm")
    assert built_base_lm(ws) == lm
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["items"]) == 10
    assert any("no adapters tuned" in n and "base LM alone" in n for n in res["notes"])
    assert any(str(lm) in n for n in res["notes"])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(no adapters tuned in" in out and "serving the base LM alone" in out
