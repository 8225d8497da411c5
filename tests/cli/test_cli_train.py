"""``llmrec train`` / ``evaluate`` on a tiny dataset: checkpoints carry their ledger version."""

import json
import shutil

from llmrec.cli.main import main
from llmrec.models import load_model


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_evaluate_forget_marks_stale(tmp_path, tiny_dir, capsys):
    common = [
        "--workspace",
        str(tmp_path / "ws"),
        "--dataset",
        "tiny",
        "--data-dir",
        str(tiny_dir),
        "--json",
    ]
    res = _json_out(capsys, ["train", "--model", "bpr", "--epochs", "3", *common])
    assert res["ledger_version"] == 0 and res["epochs"] == 3
    assert 0 <= res["test"]["ndcg@10"] <= 1
    assert load_model(res["checkpoint"]).ledger_version == 0
    req = tmp_path / "r.jsonl"
    req.write_text('{"kind": "user", "users": ["u2"]}\n')
    old = tmp_path / "bpr-v0.pt"
    shutil.copy(res["checkpoint"], old)
    _json_out(capsys, ["forget", "--request", str(req), *common])
    # the checkpoint is a forget stage: retrained at the new version
    ev = _json_out(capsys, ["evaluate", "--model", "bpr", *common])
    assert not ev["stale"] and ev["model_ledger_version"] == 1 and ev["ledger_version"] == 1
    shutil.copy(old, res["checkpoint"])  # a checkpoint from before the request is flagged
    ev = _json_out(capsys, ["evaluate", "--model", "bpr", *common])
    assert ev["stale"] and ev["model_ledger_version"] == 0 and ev["ledger_version"] == 1
    res = _json_out(capsys, ["train", "--model", "lightgcn", "--epochs", "2", *common])
    assert res["ledger_version"] == 1
    run = tmp_path / "ws" / "runs"
    cfgs = [json.loads((d / "config.json").read_text()) for d in run.iterdir()]
    assert {c["model"] for c in cfgs} == {"bpr", "lightgcn"}
    assert all((d / "versions.json").is_file() for d in run.iterdir())


def test_evaluate_without_checkpoint_is_one_line(tmp_path, tiny_dir, capsys):
    rc = main(
        [
            "evaluate",
            "--model",
            "bpr",
            "--workspace",
            str(tmp_path / "ws"),
            "--dataset",
            "tiny",
            "--data-dir",
            str(tiny_dir),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "run 'llmrec train --model bpr' first" in err[0]
