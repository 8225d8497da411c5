"""Forget audit of the LoRA adapters (the ``adapters`` stage's audit,
:class:`llmrec.forget.stages.adapters.AdapterStage`).

Each shard's manifest records the hash of the exact token stream it was tuned on, the hash of
the adapter files written and the hash of the base model's weights. The audit checks, per shard:

* the adapter files are the ones written (a garbled, truncated or replaced adapter fails);
* the base model is there and unchanged (a missing or edited base fails, naming it);
* the training stream rebuilt from the retained data at the ledger's newest version has the
  recorded hash (otherwise the adapter was tuned on data forgotten since);
* the adapter is registered at the newest ledger version (else it is stale);
* its manifest is of the current format: an older one's hash named the base model's location,
  so it cannot be checked (the remedy is named: re-tune).

Adapters registered in the ledger whose ``config.json`` is gone are reported too.
"""

from __future__ import annotations

from llmrec.data.context import StageContext, finding
from llmrec.errors import ArtifactError
from llmrec.llm.adapters import (
    FORMAT,
    OLDER,
    RETUNE,
    ShardTrainingData,
    adapter_files_hash,
    adapters_root,
    base_problem,
    load_config,
    shard_dir,
    shard_manifest,
    stale_shards,
)
from llmrec.llm.loading import weights_hash


def audit(ctx: StageContext) -> list[dict]:
    """Findings over every shard adapter of the workspace at ``ctx.view``."""
    ws, view, ledger = ctx.ws, ctx.view, ctx.ledger
    root = adapters_root(ws)
    cfg = load_config(ws)
    if cfg is None:
        arts = ledger.artifacts() if ledger is not None else []
        names = [a["name"] for a in arts if a["name"].startswith("adapter/")]
        if not names:
            return []
        return [
            finding(
                "adapter/config",
                root / "config.json",
                f"adapters {', '.join(sorted(names))} are registered but their "
                "config.json is missing: their training data cannot be verified",
            )
        ]
    findings = []
    stale = set(stale_shards(ws, ledger=ledger)) if ledger is not None else set()
    missing = base_problem(cfg)
    try:
        base_hash = None if missing else weights_hash(cfg.base, cfg.load.revision)
    except ArtifactError as exc:
        base_hash, missing = None, str(exc)
    for s in range(cfg.n_shards):
        d = shard_dir(root, s)
        name = f"adapter/shard-{s:03d}"

        def report(problem: str, name: str = name, d=d) -> None:
            findings.append(finding(name, d, problem))

        m = shard_manifest(d)
        if m is None or not (d / "adapter_model.safetensors").is_file():
            report("adapter or its training manifest is missing")
            continue
        if m.get("adapter_sha256") and adapter_files_hash(d) != m["adapter_sha256"]:
            report("adapter files differ from those written when it was tuned (content hash)")
        if s in stale:
            report(f"stale: tuned at ledger v{m['trained_at']}, ledger is at v{view.version}")
        if m.get("format") != FORMAT:
            report(f"{OLDER}: its training data cannot be verified; {RETUNE}")
            continue
        if missing is not None:
            report(f"{missing}: the adapter's training data cannot be verified")
            continue
        if m.get("base_weights_sha256") not in (None, base_hash):
            report(f"base model {cfg.base} changed since the adapter was tuned (weights hash)")
            continue
        expected = ShardTrainingData(ws, cfg, s, view.version, view).hash
        if m["data_hash"] != expected:
            report(
                "tuned on other data than the retained data (its training-data hash differs): "
                "it may hold forgotten records"
            )
    return findings
