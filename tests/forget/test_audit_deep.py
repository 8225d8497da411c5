"""``llmrec audit --deep``: exact artifacts re-derived from the retained data, compared byte for byte.

One workspace holds every re-derivable kind (a trained BPR checkpoint, a BPR candidate source,
LoRA shard adapters, a CF-encoder retrieval store, the served blend) plus an approximate
(finetune) checkpoint, and forgets some train interactions of one user. The honest workspace
passes ``--deep``; then each kind gets its pre-forget bytes back with the artifact's own
manifest *and* the ledger registry's hashes rewritten to match: the plain audit, which trusts
recorded hashes, stays OK (documented: that is what ``--deep`` is for), and ``--deep`` exits 1
naming exactly the planted artifacts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget.runner import forget
from llmrec.forget.stages.checkpoints import record_extra, save_checkpoint, start_unlearned
from llmrec.integrity import file_sha256
from llmrec.llm.adapters import adapter_files_hash, adapters_root, shard_dir, tune_adapters
from llmrec.llm.shards import shard_of
from llmrec.models import load_model
from llmrec.models.training import checkpoint_path, retained_data, train_model
from llmrec.serving.blend import NAME as BLEND
from llmrec.serving.blend import BlendFit, blend_path, encode, fit_blend, read_blend, write_blend
from llmrec.serving.cragru import default_lm_dir
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm
from retrieval.manifest import STORE_KIND, manifest_path
from retrieval.sources import build_source
from retrieval.store import RetrievalStore

FIT = BlendFit(grid=(0.0, 1.0, 4.0))
SMALL = {"epochs": 3, "dim": 16}


@pytest.fixture(scope="module")
def forgotten(tmp_path_factory):
    """The workspace after the forget, its pre-forget artifacts (``v0``), the touched shard."""
    root = tmp_path_factory.mktemp("deep")
    ws = small_workspace(root)
    lm = tiny_lm(ws, default_lm_dir(ws))
    RetrievalStore.build(
        ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4, cf_params=dict(SMALL)
    )
    cfg = adapter_config(lm.resolve(), n_shards=2, epochs=1)
    tune_adapters(ws, cfg)
    write_blend(ws, fit_blend(ws, FIT))
    data = retained_data(ws)
    model = train_model(ws, "bpr", seed=1, data=data, **SMALL)
    extra = record_extra({}, "train", True, data.train, trained_at=0, seed=1)
    with ws.ledger() as led:
        save_checkpoint(led, model, checkpoint_path(ws, "bpr"), "model:bpr", 0, extra)
        unlearned = ws.root / "artifacts" / "unlearned" / "bpr-finetune.pt"
        start_unlearned(led, model, unlearned, "model:bpr:finetune", "finetune", {}, "bpr", [None])
    build_source(ws, "bpr", seed=5, params=dict(SMALL))
    shutil.copytree(ws.root / "artifacts", root / "v0")
    user = 7
    ds = ws.dataset
    items = ds.inter_item[(ds.inter_user == user) & (ws.split.part == 0)][:3]
    pairs = tuple((str(ds.user_tokens[user]), str(ds.item_tokens[i])) for i in items)
    forget(ws, [ForgetRequest("interactions", pairs=pairs)])
    shard = int(shard_of(ds.user_tokens, cfg.n_shards, cfg.seed)[user])
    return ws, root / "v0", shard


def audit(ws, capsys, *flags: str) -> tuple[int, dict]:
    rc = main(["audit", "--workspace", str(ws.root), "--json", *flags])
    return rc, json.loads(capsys.readouterr().out)


def reregister(ws, name: str) -> None:
    """Rewrite the ledger registry's hashes of ``name`` to match its files now."""
    with ws.ledger() as led:
        (a,) = [a for a in led.artifacts() if a["name"] == name]
        path = Path(a["path"])
        digest = {rel: file_sha256(path / rel if rel else path) for rel in a["detail"]["sha256"]}
        detail = {k: v for k, v in a["detail"].items() if k not in ("sha256", "ledger_head")}
        led.register_artifact(name, a["kind"], path, a["ledger_version"], detail, digest=digest)


def plant_weights(ws, path: Path, old: Path, name: str) -> None:
    """Pre-forget weights under the current checkpoint's version and record."""
    now = load_model(path)
    load_model(old).save(path, now.ledger_version, extra=now.extra)
    reregister(ws, name)


def plant_adapter(ws, v0: Path, shard: int) -> None:
    d = shard_dir(adapters_root(ws), shard)
    for f in shard_dir(v0 / "adapters", shard).iterdir():
        if f.name != "llmrec_shard.json":
            shutil.copy(f, d / f.name)
    man = json.loads((d / "llmrec_shard.json").read_text())
    man["adapter_sha256"] = adapter_files_hash(d)
    (d / "llmrec_shard.json").write_text(json.dumps(man))
    reregister(ws, f"adapter/shard-{shard:03d}")


def plant_store(ws, v0: Path) -> None:
    """The v0 embeddings, index and clusters under the v1 names, manifest hashes rewritten."""
    path = manifest_path(ws, "retrieval")
    man, old = json.loads(path.read_text()), json.loads((v0 / "retrieval" / path.name).read_text())
    files, was = man["files"], old["files"]
    emb_old = v0 / Path(was["embeddings"]).relative_to("artifacts")
    shutil.copy(emb_old, ws.root / files["embeddings"])
    root = path.parent
    shutil.copy(v0 / "retrieval" / was["clusters"], root / files["clusters"])
    shutil.copy(v0 / "retrieval" / was["index"], root / files["index"])
    idx = json.loads((v0 / "retrieval" / f"{was['index']}.json").read_text())
    idx |= {"ledger_version": man["ledger_version"], "index_file": files["index"]}
    (root / f"{files['index']}.json").write_text(json.dumps(idx))
    for f in (files["clusters"], files["index"], f"{files['index']}.json"):
        man["sha256"][f] = file_sha256(root / f)
    path.write_text(json.dumps(man))
    reregister(ws, f"{STORE_KIND}:retrieval")


def plant_blend(ws) -> None:
    record = read_blend(ws)
    record["blend"] = next(w for w in FIT.grid if w != record["blend"])
    blend_path(ws).write_text(encode(record))
    reregister(ws, BLEND)


def test_deep_audit_passes_an_honest_workspace_and_names_the_approximate(forgotten, capsys):
    ws, _, _ = forgotten
    rc, out = audit(ws, capsys, "--deep")
    assert rc == 0, out["violations"]
    deep = out["rederived"]
    assert deep["checkpoints"]["rederived"] == ["model:bpr"]
    (approx,) = deep["checkpoints"]["not_rederived"]
    assert approx["artifact"] == "model:bpr:finetune"
    assert approx["reason"] == "not re-derivable: approximate method finetune"
    assert deep["candidate-source"]["rederived"] == ["candidate-source:bpr"]
    assert deep["adapters"]["rederived"] == ["adapter/shard-000", "adapter/shard-001"]
    assert deep["retrieval"]["rederived"] == ["retrieval:retrieval"]
    assert deep["blend"]["rederived"] == [BLEND]
    assert all(st["wall_s"] >= 0 and st["cpu_s"] >= 0 for st in deep.values())
    # --deep-shards bounds the re-tuning; a drawn-out shard is named, not hidden
    rc, out = audit(ws, capsys, "--deep", "--deep-shards", "1")
    assert rc == 0 and len(out["rederived"]["adapters"]["rederived"]) == 1
    assert "not drawn" in out["rederived"]["adapters"]["not_rederived"][0]["reason"]


def test_pre_forget_bytes_with_rewritten_hashes_pass_the_plain_audit_but_not_deep(
    forgotten, capsys
):
    ws, v0, shard = forgotten
    plant_weights(ws, checkpoint_path(ws, "bpr"), v0 / "models" / "bpr.pt", "model:bpr")
    src = ws.root / "artifacts" / "candidates" / "bpr.pt"
    plant_weights(ws, src, v0 / "candidates" / "bpr.pt", "candidate-source:bpr")
    plant_adapter(ws, v0, shard)
    plant_store(ws, v0)
    plant_blend(ws)
    rc, out = audit(ws, capsys)
    assert rc == 0, out["violations"]  # recorded hashes only say the files are the registered ones
    rc, out = audit(ws, capsys, "--deep")
    assert rc == 1
    named = {f["artifact"]: f["problem"] for f in out["violations"]}
    assert set(named) == {
        "model:bpr",
        "candidate-source:bpr",
        f"adapter/shard-{shard:03d}",
        "retrieval:retrieval",
        BLEND,
    }
    assert "user_emb.weight" in named["model:bpr"] and "retrain" in named["model:bpr"]
    assert "adapter_model.safetensors" in named[f"adapter/shard-{shard:03d}"]
    assert "item embeddings" in named["retrieval:retrieval"]
    assert "blend" in named[BLEND]
