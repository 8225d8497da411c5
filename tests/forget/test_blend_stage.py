"""The served blend as a forget artifact: re-fitted from scratch by ``forget`` (byte-identical to
a fresh fit on the retained data), audited, and refused with one line when it is unusable."""

from __future__ import annotations

import json
import shutil

import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget.runner import forget
from llmrec.llm.adapters import tune_adapters
from llmrec.serving.blend import BlendFit, blend_path, fit_blend, read_blend, write_blend
from llmrec.serving.cragru import CragruPipeline, default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore

FIT = BlendFit(grid=(0.0, 1.0, 4.0))


def build(ws: Workspace, lm) -> None:
    RetrievalStore.build(ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4)
    tune_adapters(ws, adapter_config(lm.resolve(), n_shards=2, epochs=1))


@pytest.fixture(scope="module")
def forgotten(tmp_path_factory):
    """A workspace with a fitted blend after one user request, and its v0 blend file."""
    root = tmp_path_factory.mktemp("blend")
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))
    build(ws, lm)
    write_blend(ws, fit_blend(ws, FIT))
    shutil.copy(blend_path(ws), root / "blend-v0.json")
    out = forget(ws, [ForgetRequest("user", users=(str(ws.dataset.user_tokens[3]),))])
    assert out["stages"]["blend"]["refitted"] is True
    return ws, lm, root


def audit(ws, capsys) -> tuple[int, str]:
    rc = main(["audit", "--workspace", str(ws.root)])
    return rc, capsys.readouterr().out


def test_forget_refits_the_blend_byte_identical_to_a_fresh_fit(forgotten, tmp_path):
    ws, lm, root = forgotten
    record = read_blend(ws)
    assert record["ledger_version"] == 1 and record["fit"] == FIT.to_dict()
    scratch = Workspace(tmp_path / "scratch", dataset="syn", data_dir=root / "data")
    with scratch.ledger() as led, ws.ledger() as mine:
        led.record_many([e.request for e in mine.entries()])
    build(scratch, lm)
    write_blend(scratch, fit_blend(scratch, FIT))
    assert blend_path(ws).read_bytes() == blend_path(scratch).read_bytes()
    # served by default, at its version
    assert CragruPipeline(ws).blend == record["blend"]


def test_audit_names_a_stale_or_edited_blend(forgotten, tmp_path, capsys):
    ws, _, root = forgotten
    assert audit(ws, capsys)[0] == 0
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy, symlinks=True)
    ws2 = Workspace(copy)
    shutil.copy(root / "blend-v0.json", blend_path(ws2))  # fitted on the forgotten user's data
    rc, out = audit(ws2, capsys)
    assert rc == 1 and "stage blend: violation" in out and "served-blend" in out
    assert "stale" in out
    d = json.loads((root / "blend-v0.json").read_text())
    d["ledger_version"], d["blend"] = 1, d["blend"] + 1.0  # a hand-edited weight
    blend_path(ws2).write_text(json.dumps(d))
    rc, out = audit(ws2, capsys)
    assert rc == 1 and "served-blend" in out and "edited" in out


@pytest.mark.parametrize("damage", ["truncated", "other dataset", "missing"])
def test_unusable_blend_is_one_line(forgotten, tmp_path, capsys, damage):
    ws, _, _ = forgotten
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy, symlinks=True)
    path = blend_path(Workspace(copy))
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "other dataset":
        path.write_text(text.replace(json.loads(text)["dataset"], "0" * 16))
    else:
        path.unlink()
    rc, out = audit(Workspace(copy), capsys)
    assert rc == 1 and "served-blend" in out
    if damage == "missing":
        assert "missing" in out
        return
    user = str(ws.dataset.user_tokens[0])
    rc = main(["recommend", "--workspace", str(copy), "--user", user])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "served blend" in err, err
    assert ("truncated" in err) if damage == "truncated" else ("another dataset" in err)


def test_blend_cli_fits_and_registers(forgotten, tmp_path, capsys):
    ws, _, _ = forgotten
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy, symlinks=True)
    blend_path(Workspace(copy)).unlink()
    rc = main(["adapters", "blend", "--workspace", str(copy), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["ledger_version"] == 1 and res["users"] > 0
    assert audit(Workspace(copy), capsys)[0] == 0
