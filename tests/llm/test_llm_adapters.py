"""Acceptance 3: sharded LoRA adapters are exactly unlearnable.

After a forget request the re-tuned shards equal shards tuned from scratch on the retained data
with the same seed, untouched shards are byte-identical, and the ledger records versions.
"""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data.requests import ForgetRequest, users_request
from llmrec.data.split import TRAIN
from llmrec.errors import ArtifactError
from llmrec.forget.runner import forget
from llmrec.llm.adapters import (
    adapters_root,
    load_config,
    shard_dir,
    shard_manifest,
    stale_shards,
    tune_adapters,
)
from llmrec.llm.catalog import Catalog
from llmrec.llm.shards import shard_of
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import adapter_config, tiny_lm

WEIGHTS = "adapter_model.safetensors"


def weights(root, n):
    return {s: (shard_dir(root, s) / WEIGHTS).read_bytes() for s in range(n)}


@pytest.fixture()
def tuned(tmp_path):
    ws = small_workspace(tmp_path)
    lm = tiny_lm(ws, tmp_path / "lm")
    cfg = adapter_config(lm)
    rep = tune_adapters(ws, cfg)
    assert rep["retuned"] == [0, 1, 2] and rep["untouched"] == []
    return ws, cfg, tmp_path


def assert_equals_scratch(ws, cfg, tmp_path, name):
    scratch = tmp_path / name
    tune_adapters(ws, cfg, root=scratch, register=False)
    assert weights(adapters_root(ws), cfg.n_shards) == weights(scratch, cfg.n_shards)
    for s in range(cfg.n_shards):
        a = shard_manifest(shard_dir(adapters_root(ws), s))
        b = shard_manifest(shard_dir(scratch, s))
        assert a["data_hash"] == b["data_hash"]


def test_adapters_are_standard_peft_folders(tuned):
    ws, cfg, _ = tuned
    from peft import PeftConfig

    d = shard_dir(adapters_root(ws), 0)
    assert PeftConfig.from_pretrained(str(d)).peft_type.value == "LORA"
    size = (d / WEIGHTS).stat().st_size
    assert size < 200_000  # deltas and low-rank factors only, no copy of the base embeddings
    stored = load_config(ws)  # the template is named and the prompt contract recorded
    assert stored.pinned() == cfg.resolved(Catalog.from_dataset(ws.dataset)).pinned()
    assert stored.template == "compact" and stored.contract["template"] == "compact"
    assert shard_manifest(d)["prompt_contract"] == stored.contract


def test_user_forget_retunes_only_its_shard_and_matches_scratch(tuned):
    ws, cfg, tmp_path = tuned
    ds = ws.dataset
    before = weights(adapters_root(ws), 3)
    assign = shard_of(ds.user_tokens, 3, cfg.seed)
    victim = int(ds.inter_user[(assign[ds.inter_user] == 1) & (ws.split.part == TRAIN)][0])
    out = forget(ws, [users_request(ds, np.array([victim]))])
    assert out["stages"]["adapters"]["retuned"] == [1]
    assert out["stages"]["adapters"]["untouched"] == [0, 2]
    after = weights(adapters_root(ws), 3)
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    assert_equals_scratch(ws, cfg, tmp_path, "scratch1")
    with ws.ledger() as led:
        arts = {a["name"]: a for a in led.artifacts() if a["kind"] == "lora-adapter"}
    assert {a["ledger_version"] for a in arts.values()} == {1}
    trained = {n: a["detail"]["trained_at"] for n, a in arts.items()}
    assert trained == {"adapter/shard-000": 0, "adapter/shard-001": 1, "adapter/shard-002": 0}
    assert stale_shards(ws) == []


def test_attribute_and_item_forgets_touch_exactly_the_shards_holding_them(tuned):
    ws, cfg, tmp_path = tuned
    ds = ws.dataset
    assign = shard_of(ds.user_tokens, 3, cfg.seed)
    who = int(np.flatnonzero(assign == 2)[0])
    req = ForgetRequest("attribute", users=(str(ds.user_tokens[who]),), attributes=("gender",))
    out = forget(ws, [req])
    assert out["stages"]["adapters"]["retuned"] == [2]

    train = ws.split.part == TRAIN
    counts = np.bincount(ds.inter_item[train], minlength=ds.n_items)
    item = int(np.flatnonzero(counts > 0)[np.argmin(counts[counts > 0])])
    holders = set(assign[ds.inter_user[train & (ds.inter_item == item)]].tolist())
    before = weights(adapters_root(ws), 3)
    out = forget(ws, [ForgetRequest("item", items=(str(ds.item_tokens[item]),))])
    assert set(out["stages"]["adapters"]["retuned"]) == holders
    after = weights(adapters_root(ws), 3)
    for s in set(range(3)) - holders:
        assert after[s] == before[s]
    assert_equals_scratch(ws, cfg, tmp_path, "scratch2")


def test_resume_is_idempotent_and_config_is_pinned(tuned):
    ws, cfg, _ = tuned
    before = weights(adapters_root(ws), 3)
    rep = tune_adapters(ws)
    assert rep["retuned"] == [] and weights(adapters_root(ws), 3) == before
    other = adapter_config(cfg.base, n_shards=2)
    with pytest.raises(ArtifactError):
        tune_adapters(ws, other)


def test_merged_and_switched_adapters_serve_the_same_scores(tuned):
    from llmrec.llm.adapters import adapter_paths
    from llmrec.llm.backends.hf import HFBackend
    from llmrec.llm.catalog import Catalog
    from llmrec.llm.prompt import UserContext

    ws, cfg, _ = tuned
    ds = ws.dataset
    _, paths = adapter_paths(ws)
    cat = Catalog.from_dataset(ds)
    ctx = [
        UserContext(u, {}, ds.inter_item[ds.inter_user == u][:8], None, np.arange(10, 20))
        for u in range(3)
    ]
    merged = HFBackend.from_pretrained(cfg.base, cat, adapters=paths, merge=True)
    peft = HFBackend.from_pretrained(cfg.base, cat, adapters=paths, merge=False)
    for name in [None, *paths]:
        a = merged.rank(ctx, "likelihood", adapter=name)
        b = peft.rank(ctx, "likelihood", adapter=name)
        for x, y in zip(a, b):
            order = np.argsort(x.items)
            np.testing.assert_allclose(
                x.scores[order], y.scores[np.argsort(y.items)], rtol=1e-4, atol=1e-4
            )
    base = merged.rank(ctx, "likelihood")[0].scores
    tuned_scores = merged.rank(ctx, "likelihood", adapter="shard-000")[0].scores
    assert not np.allclose(np.sort(base), np.sort(tuned_scores))  # the adapter matters
