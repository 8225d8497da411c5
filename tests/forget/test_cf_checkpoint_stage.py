"""CF checkpoints are a forget stage (docs/design.md §2.3): ``llmrec train`` -> ``llmrec index
build`` -> ``llmrec forget`` -> ``llmrec audit`` passes with the checkpoint's stage shown;
``retrain`` (the default) equals training from scratch, an approximate ``--cf-method`` is
reported as approximate naming its method, and ``llmrec unlearn`` goes through the same runner.
"""

from __future__ import annotations

import json

import pytest
import torch

from llmrec.cli.main import main
from llmrec.forget.audit import run_audit
from llmrec.models import load_model
from llmrec.models.training import checkpoint_path, retained_data, train_model
from llmrec.testing.fixtures import small_workspace


def _request(path, user: str):
    path.write_text(json.dumps({"kind": "user", "users": [user]}) + "\n")
    return str(path)


def test_train_index_forget_audit_with_exact_then_approximate_checkpoints(tmp_path, capsys):
    ws = small_workspace(tmp_path)
    ds = ws.dataset  # writes workspace.json
    common = ["--workspace", str(ws.root)]
    assert main(["train", "--model", "bpr", "--epochs", "3", "--dim", "8", *common]) == 0
    assert main(["index", "build", "--encoder", "cf", "--clusters", "4", *common]) == 0
    capsys.readouterr()

    # retrain (the default): exact, bit-identical to training from scratch on the retained data
    assert (
        main(
            ["forget", "--request", _request(tmp_path / "a.jsonl", str(ds.user_tokens[3])), *common]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "stage checkpoints: applied versions [1]" in out and "model:bpr: retrain (exact)" in out
    assert main(["audit", *common]) == 0
    out = capsys.readouterr().out
    assert "stage checkpoints: clean" in out and "stage retrieval: clean" in out, out
    path = checkpoint_path(ws, "bpr")
    got = load_model(path)
    assert got.ledger_version == 1 and got.extra["cf_method"] == "retrain" and got.extra["exact"]
    scratch = train_model(ws, "bpr", seed=2020, data=retained_data(ws), epochs=3, dim=8)
    assert all(torch.equal(a, b) for a, b in zip(got.parameters(), scratch.parameters()))

    # an approximate method chosen for the workspace: the audit says so, naming it
    req = _request(tmp_path / "b.jsonl", str(ds.user_tokens[5]))
    cf = ["--cf-method", "finetune", "--cf-set", "epochs=1"]
    assert main(["forget", "--request", req, *cf, *common]) == 0
    assert "model:bpr: finetune (approximate), updated" in capsys.readouterr().out
    assert main(["audit", *common]) == 0
    out = capsys.readouterr().out
    assert "stage checkpoints: approximate: model:bpr by finetune" in out, out
    assert "VIOLATION" not in out and "approximate" in out.splitlines()[-1]
    got = load_model(path)
    assert got.ledger_version == 2 and got.extra["cf_method"] == "finetune"
    assert (
        not got.extra["exact"]
        and json.loads((ws.root / "workspace.json").read_text())["cf_method"] == "finetune"
    )

    # `llmrec unlearn --method M` records through the same runner and brings the one trained
    # checkpoint up to date with M: not the workspace's finetune, no hidden retrain, no copy
    req = _request(tmp_path / "c.jsonl", str(ds.user_tokens[7]))
    assert main(["unlearn", "--method", "alteraser", "--request", req, "--json", *common]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ledger_version"] == 3 and res["record"]["method"] == "alteraser"
    assert res["checkpoint"] == str(path) and not (ws.root / "artifacts" / "unlearned").exists()
    got = load_model(path)
    assert (got.ledger_version, got.extra["cf_method"], got.extra["exact"]) == (
        3,
        "alteraser",
        False,
    )
    assert main(["audit", *common]) == 0
    assert "stage checkpoints: approximate: model:bpr by alteraser" in capsys.readouterr().out
    rep = run_audit(ws)
    assert rep["ok"], rep["violations"]
    approx = {a["artifact"]: a["method"] for a in rep["stages"]["checkpoints"]["approximate"]}
    assert approx == {"model:bpr": "alteraser"}
    assert json.loads((ws.root / "workspace.json").read_text())["cf_method"] == "finetune"

    # unlearning with retrain makes it exact again, bit-identical to training from scratch
    req = _request(tmp_path / "e.jsonl", str(ds.user_tokens[11]))
    assert main(["unlearn", "--method", "retrain", "--request", req, *common]) == 0
    capsys.readouterr()
    got = load_model(path)
    assert got.extra["exact"] and got.ledger_version == 4 and got.extra["cf_method"] == "retrain"
    scratch = train_model(ws, "bpr", seed=2020, data=retained_data(ws), epochs=3, dim=8)
    assert all(torch.equal(a, b) for a, b in zip(got.parameters(), scratch.parameters()))

    # the workspace's own method (finetune) applies to the next plain forget; back to retrain
    req = _request(tmp_path / "d.jsonl", str(ds.user_tokens[9]))
    assert main(["forget", "--request", req, "--cf-method", "retrain", *common]) == 0
    capsys.readouterr()
    rep = run_audit(ws)
    assert rep["ok"], rep["violations"]
    assert rep["stages"]["checkpoints"]["approximate"] == []
    assert load_model(path).extra["exact"] and load_model(path).ledger_version == 5


def test_attribute_request_keeps_the_weights_and_bumps_the_version(tmp_path, capsys):
    ws = small_workspace(tmp_path)
    common = ["--workspace", str(ws.root), "--dataset", "syn", "--data-dir", str(tmp_path / "data")]
    assert main(["train", "--model", "bpr", "--epochs", "2", "--dim", "8", *common]) == 0
    before = load_model(checkpoint_path(ws, "bpr"))
    req = tmp_path / "attr.jsonl"
    req.write_text(json.dumps({"kind": "attribute", "attributes": ["gender"]}) + "\n")
    assert main(["forget", "--request", str(req), *common]) == 0
    assert "unchanged training pairs, weights kept" in capsys.readouterr().out
    after = load_model(checkpoint_path(ws, "bpr"))
    assert after.ledger_version == 1
    assert all(torch.equal(a, b) for a, b in zip(after.parameters(), before.parameters()))
    assert run_audit(ws)["ok"]


@pytest.mark.parametrize("name", ["magic", "sisa", "cragru"])
def test_unknown_cf_method_is_one_line(tmp_path, capsys, name):
    """Not a method, a shard method (it would turn the checkpoint into an ensemble) or an
    LLM-path method: refused in one line, the workspace's setting untouched."""
    import llmrec.experiments.compare  # noqa: F401  (registers the LLM-path methods)

    ws = small_workspace(tmp_path)
    assert ws.dataset.n_users  # writes workspace.json
    rc = main(["forget", "--cf-method", name, "--workspace", str(ws.root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and f"unknown CF method {name!r}" in err[0]
    assert "finetune" in err[0] and "sisa" not in err[0].split("expected")[1]
    assert json.loads((ws.root / "workspace.json").read_text()).get("cf_method", "retrain") == (
        "retrain"
    )
