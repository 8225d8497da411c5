"""The ``adapters`` forget stage: the per-shard LoRA adapters of the LLM path.

Layout: ``artifacts/adapters/config.json`` (how they were tuned, ``n_shards`` among it) and one
folder ``shard-NNN/`` per shard holding the peft files and ``llmrec_shard.json`` (its training
data hash and ``trained_at`` ledger version), each registered in the ledger as ``lora-adapter``.
The base LM they are tuned on (``artifacts/lm/``) is found here too. Applying re-tunes the
shards whose training data changed (:func:`llmrec.llm.adapters.tune_adapters`); the audit is
:func:`llmrec.llm.audit.audit`, the re-derivation (``llmrec audit --deep``: re-tune and
compare bytes) :func:`llmrec.llm.audit.rederive`.
"""

from __future__ import annotations

from llmrec.forget.registry import register_stage
from llmrec.forget.stage import Found, RederiveOptions, StageAudit, StageContext, int_or_none
from llmrec.io import read_json_object
from llmrec.workspace import Workspace

KIND = "lora-adapter"
NO_ADAPTERS = {"skipped": "no adapters tuned in this workspace"}


@register_stage
class AdapterStage:
    """Per-shard LoRA adapters: the shards whose training data changed are re-tuned."""

    name = "adapters"
    order = 200

    def discover(self, ws: Workspace) -> list[Found]:
        art = ws.root / "artifacts"
        root = art / "adapters"
        out = []
        cfg = read_json_object(root / "config.json")
        n_shards = int_or_none(cfg.get("n_shards")) if cfg else None
        for d in sorted(root.glob("shard-[0-9]*")) if root.is_dir() else []:
            if not d.is_dir():
                continue
            m = read_json_object(d / "llmrec_shard.json") or {}
            idx = d.name.removeprefix("shard-")
            problem = None
            if n_shards is not None and idx.isdigit() and int(idx) >= n_shards:
                problem = (
                    f"left over from an earlier tuning (the adapters have {n_shards} shards "
                    "now): no forget updates it; delete it"
                )
            out.append(
                Found(
                    f"adapter/{d.name}",
                    KIND,
                    d,
                    int_or_none(m.get("trained_at")),
                    None,
                    True,
                    problem,
                )
            )
        if out and not (root / "config.json").is_file():
            out.append(
                Found(
                    "adapters",
                    "adapter-config",
                    root / "config.json",
                    problem="adapters/config.json is missing while shard adapters exist: "
                    "forgets would skip them; re-tune with 'llmrec adapters tune --force'",
                )
            )
        if (art / "lm" / "config.json").is_file():
            out.append(Found("lm/base", "base-lm", art / "lm"))
        return out

    @staticmethod
    def _present(ctx: StageContext) -> bool:
        """Adapters tuned or registered here (checked before importing transformers)."""
        if (ctx.ws.root / "artifacts" / "adapters" / "config.json").is_file():
            return True
        arts = ctx.ledger.artifacts() if ctx.ledger is not None else []
        return any(a["kind"] == KIND for a in arts)

    def apply(self, ctx: StageContext) -> dict:
        if not self._present(ctx):
            return dict(NO_ADAPTERS)
        from llmrec.llm.adapters import load_config, tune_adapters

        if load_config(ctx.ws) is None:
            return dict(NO_ADAPTERS)
        rep = tune_adapters(ctx.ws, version=ctx.version, view=ctx.view, ledger=ctx.ledger)
        return {"retuned": rep["retuned"], "untouched": rep["untouched"]}

    def audit(self, ctx: StageContext) -> StageAudit:
        if not self._present(ctx):
            return StageAudit()
        from llmrec.llm.adapters import load_config
        from llmrec.llm.audit import audit

        cfg = load_config(ctx.ws)
        shards = [] if cfg is None else [f"adapter/shard-{s:03d}" for s in range(cfg.n_shards)]
        return StageAudit(audit(ctx), shards)

    def rederive(self, ctx: StageContext, options: RederiveOptions) -> StageAudit:
        if not self._present(ctx):
            return StageAudit()
        from llmrec.llm.audit import rederive

        return rederive(ctx, options)
