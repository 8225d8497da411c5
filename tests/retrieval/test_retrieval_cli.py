"""``llmrec index build|info``, ``llmrec retrieve`` and ``llmrec forget`` on the retrieval store."""

from __future__ import annotations

import json

import pytest

from llmrec.cli.main import main
from llmrec.forget import registry as stages
from tests.retrieval.test_retrieval_store import shared_text_cache


@pytest.fixture()
def only_retrieval_stage(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", stages.select("retrieval"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_build_retrieve_forget_cycle(tmp_path, capsys, only_retrieval_stage):
    cache, _ = shared_text_cache(tmp_path)
    ws = ["--workspace", str(tmp_path / "ws")]
    rc, out, _ = run(capsys, "index", "build", *ws, "--cache-dir", str(cache), "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["items_indexed"] == 1682 and info["ledger_version"] == 0
    assert info["encoder"]["kind"] == "text" and info["factory"] == "Flat"

    rc, out, _ = run(capsys, "retrieve", *ws, "--user", "13", "--strategy", "diversity", "--json")
    assert rc == 0
    res = json.loads(out)
    assert len(res["history"]) == 50 and len(res["candidates"]) == 50
    assert res["history_total"] > 50 and res["profile"]["gender"] in ("M", "F")
    first = res["history"][0]["item"]
    top = res["candidates"][0]["item"]

    rc, out, _ = run(capsys, "retrieve", *ws, "--user", "13", "--strategy", "attention")
    assert rc == 0 and "candidates (best first):" in out and "history (chronological):" in out

    reqs = tmp_path / "req.jsonl"
    reqs.write_text(
        json.dumps({"kind": "item", "items": [top]})
        + "\n"
        + json.dumps({"kind": "interactions", "pairs": [["13", first]]})
        + "\n"
        + json.dumps({"kind": "attribute", "attributes": ["gender"], "users": ["13"]})
        + "\n"
    )
    rc, out, _ = run(capsys, "forget", *ws, "--request", str(reqs), "--json")
    assert rc == 0
    stage = json.loads(out)["stages"]["retrieval"]["stores"]["retrieval"]
    assert stage["applied"] and stage["ledger_version"] == 3 and stage["items_removed"] == 1

    for strategy in ("preference", "diversity", "attention"):
        rc, out, _ = run(
            capsys, "retrieve", *ws, "--user", "13", "--strategy", strategy, "--H", "1000",
            "--candidates", "1600", "--json",
        )  # fmt: skip
        res = json.loads(out)
        assert res["ledger_version"] == 3 and "gender" not in res["profile"]
        assert top not in {c["item"] for c in res["candidates"]}
        assert {first, top}.isdisjoint(h["item"] for h in res["history"])

    rc, out, _ = run(capsys, "index", "info", *ws, "--json")
    assert json.loads(out)["items_indexed"] == 1681


def test_errors(tmp_path, capsys, only_retrieval_stage):
    cache, _ = shared_text_cache(tmp_path)
    ws = ["--workspace", str(tmp_path / "ws")]
    rc, _, err = run(capsys, "retrieve", *ws, "--user", "1")
    assert rc == 2 and "llmrec index build" in err
    rc, _, err = run(capsys, "index", "build", *ws, "--factory", "Nonsense")
    assert rc == 2 and "factory" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # range-checked by the parser: one line
        main(["index", "build", *ws, "--candidates", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--candidates" in err and len(err.strip().splitlines()) == 1
    assert run(capsys, "index", "build", *ws, "--cache-dir", str(cache))[0] == 0
    rc, _, err = run(capsys, "retrieve", *ws, "--user", "no-such-user")
    assert rc == 2 and "unknown user" in err
    with pytest.raises(SystemExit) as exc:
        main(["retrieve", *ws, "--user", "1", "--H", "-1"])
    assert exc.value.code == 2 and "--H" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # not a strategy (dp is: tests/cli/test_candidate_sources_cli)
        main(["retrieve", *ws, "--user", "1", "--strategy", "nonsense"])
    reqs = tmp_path / "user.jsonl"
    reqs.write_text(json.dumps({"kind": "user", "users": ["1"]}) + "\n")
    from llmrec.data.requests import load_requests
    from llmrec.workspace import Workspace

    with Workspace(tmp_path / "ws").ledger() as led:  # recorded, retrieval stage not run
        led.record_many(load_requests(reqs), stages=["retrieval"])
    rc, _, err = run(capsys, "retrieve", *ws, "--user", "2")
    assert rc == 2 and "stale" in err and "llmrec forget" in err
    rc, out, _ = run(capsys, "forget", *ws, "--json")  # resume finishes the stage
    assert rc == 0 and json.loads(out)["stages"]["retrieval"]["stores"]["retrieval"]["applied"]
    rc, _, err = run(capsys, "retrieve", *ws, "--user", "1")
    assert rc == 2 and "forgotten" in err
    assert run(capsys, "retrieve", *ws, "--user", "2")[0] == 0
