"""The ``blend`` forget stage: the served blend, fitted on VALID from user data.

Layout: ``artifacts/adapters/blend.json`` (the weight(s), the fit settings, the dataset and the
ledger version), registered in the ledger as :data:`llmrec.serving.blend.KIND` with its content
hash. It is re-fitted from scratch on the retained data (:func:`llmrec.serving.blend.fit_blend`
with the settings the file records) after the retrieval store and the adapters it ranks with are
current; the audit checks the file against the ledger (version, registered hash, dataset), and
``llmrec audit --deep`` re-fits it on the workspace's current store and adapters and compares the
file byte for byte (a weight chosen on other data, hashes rewritten, is caught).
"""

from __future__ import annotations

import json
import time

from llmrec.errors import ArtifactError
from llmrec.forget.registry import register_stage
from llmrec.forget.stage import (
    Found,
    RederiveOptions,
    StageAudit,
    StageContext,
    finding,
    int_or_none,
    not_rederived,
)
from llmrec.workspace import Workspace


def _registered(ctx: StageContext) -> list[dict]:
    from llmrec.serving.blend import KIND

    arts = ctx.ledger.artifacts() if ctx.ledger is not None else []
    return [a for a in arts if a["kind"] == KIND]


@register_stage
class BlendStage:
    """The served blend: re-fitted from scratch when the ledger moved past it."""

    name = "blend"
    order = 450  # after the retrieval store and the adapters, before the served log

    def discover(self, ws: Workspace) -> list[Found]:
        from llmrec.serving.blend import KIND, NAME, blend_path

        path = blend_path(ws)
        if not path.is_file():
            return []
        try:
            claimed = int_or_none(json.loads(path.read_text()).get("ledger_version"))
            unusable = None
        except (OSError, ValueError, AttributeError) as exc:
            claimed, unusable = None, f"served blend unreadable ({str(exc)[:120]})"
        return [Found(NAME, KIND, path, claimed_version=claimed, unusable=unusable)]

    def apply(self, ctx: StageContext) -> dict:
        from llmrec.serving.blend import BlendFit, blend_path, fit_blend, read_blend, write_blend

        if not blend_path(ctx.ws).is_file() and not _registered(ctx):
            return {"skipped": "no served blend in this workspace"}
        record = read_blend(ctx.ws)
        if record is None:
            raise ArtifactError(
                f"served blend {blend_path(ctx.ws)} is registered but missing: re-fit it with "
                "'llmrec adapters blend'"
            )
        if int(record["ledger_version"]) >= ctx.version:
            return {"refitted": False, "ledger_version": int(record["ledger_version"])}
        from retrieval.store import RetrievalStore

        t0 = time.perf_counter()
        store = RetrievalStore.load(
            ctx.ws, allow_stale=True, ledger=ctx.ledger, view_at=ctx.view_at
        )
        if store.ledger_version != ctx.version:
            raise ArtifactError(
                f"the retrieval store reflects ledger v{store.ledger_version}, not "
                f"v{ctx.version}: the served blend is re-fitted after it"
            )
        new = fit_blend(ctx.ws, BlendFit.from_dict(record["fit"]), store=store, ledger=ctx.ledger)
        write_blend(ctx.ws, new, ctx.ledger)
        return {
            "refitted": True,
            "blend": new["blend"],
            "seconds": round(time.perf_counter() - t0, 3),
        }

    def audit(self, ctx: StageContext) -> StageAudit:
        from llmrec.integrity import file_sha256
        from llmrec.serving.blend import NAME, blend_path, read_blend

        path = blend_path(ctx.ws)
        regs = _registered(ctx)
        if not path.is_file() and not regs:
            return StageAudit()
        findings: list[dict] = []

        def report(problem: str) -> None:
            findings.append(finding(NAME, path, problem))

        if not path.is_file():
            report("registered in the ledger but the file is missing")
            return StageAudit(findings, [NAME])
        try:
            record = read_blend(ctx.ws)
        except ArtifactError as exc:
            report(str(exc))
            return StageAudit(findings, [NAME])
        version = int(record["ledger_version"])
        if version < ctx.version:
            report(f"stale: fitted at ledger v{version}, the ledger is at v{ctx.version}")
        if not regs:
            report("not registered in the ledger: what it was fitted on cannot be verified")
            return StageAudit(findings, [NAME])
        reg = regs[0]
        if int(reg["ledger_version"]) != version:
            report(f"file says ledger v{version}, registry says v{reg['ledger_version']}")
        want = (reg["detail"].get("sha256") or {}).get("")
        if want != file_sha256(path):
            report("edited since it was fitted (content hash differs from the registered one)")
        return StageAudit(findings, [NAME])

    def rederive(self, ctx: StageContext, options: RederiveOptions) -> StageAudit:
        from llmrec.serving.blend import NAME, BlendFit, blend_path, encode, fit_blend, read_blend
        from retrieval.store import RetrievalStore

        path = blend_path(ctx.ws)
        if not path.is_file():
            return StageAudit()
        try:
            record = read_blend(ctx.ws)
            store = RetrievalStore.load(
                ctx.ws, allow_stale=True, ledger=ctx.ledger, view_at=ctx.view_at
            )
        except ArtifactError as exc:
            return StageAudit(not_rederived=[not_rederived(NAME, path, str(exc)[:200])])
        version = int(record["ledger_version"])
        if version != ctx.version or store.ledger_version != ctx.version:
            why = (
                f"fitted at ledger v{version}, store at v{store.ledger_version}: only a blend "
                f"fitted at the ledger's version v{ctx.version} is re-fitted (see the audit)"
            )
            return StageAudit(not_rederived=[not_rederived(NAME, path, why)])
        fresh = fit_blend(ctx.ws, BlendFit.from_dict(record["fit"]), store=store, ledger=ctx.ledger)
        rep = StageAudit(artifacts=[NAME])
        if encode(fresh) != path.read_text():
            differ = sorted(k for k in set(record) | set(fresh) if record.get(k) != fresh.get(k))
            rep.findings.append(
                finding(
                    NAME,
                    path,
                    f"differs from a re-fit on the retained data at ledger v{version} "
                    f"({', '.join(differ) or 'layout'}; blend {record.get('blend')} where the "
                    f"re-fit chooses {fresh['blend']}): it was fitted on other data",
                )
            )
        return rep
