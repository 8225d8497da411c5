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

:func:`rederive` (``llmrec audit --deep``) re-tunes each shard from scratch on the retained
data (same seed, same torch thread count as recorded) into a scratch folder outside the
workspace and compares the adapter files byte for byte (``adapter_config.json`` as JSON), so weights replaced by pre-forget ones,
manifest and registry hashes rewritten, are caught. A shard tuned data-parallel over several
processes is equal to a re-tune only up to float summation order and is named as not
re-derivable.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from llmrec.data.context import (
    RederiveOptions,
    StageAudit,
    StageContext,
    finding,
    not_rederived,
)
from llmrec.errors import ArtifactError
from llmrec.llm.adapters import (
    FORMAT,
    OLDER,
    RETUNE,
    SHARD_MANIFEST,
    ShardTrainingData,
    adapter_files_hash,
    adapters_root,
    base_problem,
    load_config,
    shard_dir,
    shard_manifest,
    stale_shards,
    tune_adapters,
)
from llmrec.llm.loading import weights_hash
from llmrec.llm.lora import torch_threads


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


def _adapter_files(folder: Path) -> dict[str, object]:
    """The peft files of an adapter folder, as compared: weights by their bytes,
    ``adapter_config.json`` as JSON with ``target_modules`` as a set (peft writes that set in
    the process's string-hash order, so its bytes differ between two runs)."""
    out: dict[str, object] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name == SHARD_MANIFEST:
            continue
        out[p.name] = p.read_bytes()
        if p.name == "adapter_config.json":
            try:
                cfg = json.loads(out[p.name])
                if isinstance(cfg.get("target_modules"), list):
                    cfg["target_modules"] = sorted(map(str, cfg["target_modules"]))
                out[p.name] = cfg
            except (ValueError, AttributeError):
                pass  # compared by its bytes
    return out


def rederive(ctx: StageContext, options: RederiveOptions) -> StageAudit:
    """Re-tune the shards (at most ``options.max_shards`` of them, drawn with
    ``options.seed``) and compare their files (module docstring)."""
    ws = ctx.ws
    rep = StageAudit()
    cfg = load_config(ws)
    if cfg is None:
        return rep
    root = adapters_root(ws)
    shards = list(range(cfg.n_shards))
    if options.max_shards is not None and options.max_shards < len(shards):
        drawn = np.random.default_rng(options.seed).choice(
            len(shards), options.max_shards, replace=False
        )
        chosen = sorted(int(s) for s in drawn)
        for s in sorted(set(shards) - set(chosen)):
            rep.not_rederived.append(
                not_rederived(
                    f"adapter/shard-{s:03d}",
                    shard_dir(root, s),
                    f"not drawn (--deep-shards {options.max_shards})",
                )
            )
        shards = chosen
    with tempfile.TemporaryDirectory(prefix="llmrec-deep-", dir=options.scratch) as tmp:
        for s in shards:
            d, name = shard_dir(root, s), f"adapter/shard-{s:03d}"
            m = shard_manifest(d)
            why = None
            if m is None or not (d / "adapter_model.safetensors").is_file():
                why = "adapter or its manifest is missing: see the audit's findings"
            elif int(m.get("processes") or 1) > 1:
                why = (
                    f"not re-derivable: tuned data-parallel over {m['processes']} processes "
                    "(equal to a re-tune only up to float summation order)"
                )
            elif cfg.device != "cpu":
                why = f"not re-derivable here: tuned on {cfg.device}, re-tuned only on cpu"
            if why:
                rep.not_rederived.append(not_rederived(name, d, why))
                continue
            with torch_threads(m.get("torch_threads")):
                tune_adapters(
                    ws,
                    cfg,
                    shards=[s],
                    force=True,
                    root=Path(tmp),
                    register=False,
                    view=ctx.view,
                    ledger=ctx.ledger,
                )
            rep.artifacts.append(name)
            mine, fresh = _adapter_files(d), _adapter_files(shard_dir(Path(tmp), s))
            differ = sorted(f for f in set(mine) | set(fresh) if mine.get(f) != fresh.get(f))
            if differ:
                rep.findings.append(
                    finding(
                        name,
                        d,
                        f"adapter files differ from a re-tune on the retained data at ledger "
                        f"v{ctx.version} (same seed): {', '.join(differ)}; it may hold "
                        "forgotten records",
                    )
                )
    return rep
