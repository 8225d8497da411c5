"""Forget audit of the LoRA adapters (registered in :mod:`llmrec.pipelines.audit`).

Each shard's manifest records the hash of the exact token stream it was tuned on. The audit
rebuilds that stream from the retained data at the ledger's newest version: a different hash
means the adapter was tuned on data that has been forgotten since (or on anything else than the
retained data); an adapter registered at an older ledger version is stale.
"""

from __future__ import annotations

from llmrec.data.retained import RetainedView
from llmrec.llm.adapters import (
    ShardTrainingData,
    adapters_root,
    load_config,
    read_manifest,
    shard_dir,
    stale_shards,
)
from llmrec.workspace import Workspace


def audit(ws: Workspace, view: RetainedView) -> list[dict]:
    cfg = load_config(ws)
    if cfg is None:
        return []
    root = adapters_root(ws)
    findings = []
    stale = set(stale_shards(ws))
    for s in range(cfg.n_shards):
        d = shard_dir(root, s)
        name = f"adapter/shard-{s:03d}"
        m = read_manifest(d)
        if m is None:
            findings.append(
                {
                    "artifact": name,
                    "path": str(d),
                    "problem": "adapter or its training manifest is missing",
                }
            )
            continue
        if s in stale:
            findings.append(
                {
                    "artifact": name,
                    "path": str(d),
                    "problem": f"stale: tuned at ledger v{m['trained_at']}, ledger is at v{view.version}",
                }
            )
        expected = ShardTrainingData(ws, cfg, s, view.version).hash
        if m["data_hash"] != expected:
            findings.append(
                {
                    "artifact": name,
                    "path": str(d),
                    "problem": "tuned on other data than the retained data (its training-data hash "
                    "differs): it may hold forgotten records",
                }
            )
    return findings
