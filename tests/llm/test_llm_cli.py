"""``llmrec build-lm``, ``llmrec adapters tune|status`` and their errors."""

from __future__ import annotations

import json

from llmrec.cli.main import main
from llmrec.testing.fixtures import small_workspace


def run(capsys, *argv):
    code = main(list(argv) + ["--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def test_build_lm_tune_status_and_errors(tmp_path, capsys):
    ws = small_workspace(tmp_path)
    assert ws.dataset.n_items == 80  # persists the workspace
    w = ["--workspace", str(ws.root)]
    code, _, err = run(capsys, "adapters", "tune", *w)
    assert code != 0 and "build-lm" in err
    code, res, _ = run(
        capsys,
        "build-lm",
        *w,
        "--init",
        "scratch",
        "--layers",
        "1",
        "--dim",
        "32",
        "--heads",
        "2",
        "--epochs",
        "1",
    )
    assert code == 0 and res["holds_user_data"] is False and res["n_items"] == 80
    with ws.ledger() as led:
        art = {a["name"]: a for a in led.artifacts()}["lm/base"]
    assert art["detail"]["holds_user_data"] is False
    code, res, err = run(capsys, "adapters", "tune", *w, "--shards", "2", "--epochs", "1")
    assert code == 0 and res["retuned"] == [0, 1], err
    code, res, _ = run(capsys, "adapters", "tune", *w, "--shards", "2", "--epochs", "1")
    assert code == 0 and res["retuned"] == [] and res["untouched"] == [0, 1]
    code, _, err = run(capsys, "adapters", "tune", *w, "--shards", "3", "--epochs", "1")
    assert code != 0 and "--force" in err
    code, res, _ = run(capsys, "adapters", "status", *w)
    assert code == 0 and len(res["shards"]) == 2 and res["stale"] == []
    assert all(s["trained_at"] == 0 and s["users"] > 0 for s in res["shards"])
    code, _, err = run(capsys, "recommend", *w, "--user", "no-such-user")
    assert code != 0 and "error" in err
