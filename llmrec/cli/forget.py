"""``llmrec forget --request FILE``: record requests in the ledger and apply them everywhere."""

from __future__ import annotations

import argparse

from llmrec.cli.common import emit, nonempty, open_workspace, parse_overrides, positive_int
from llmrec.data.requests import load_requests
from llmrec.errors import LlmrecError
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget, resume, set_policy
from llmrec.forget.stage import RederiveOptions
from llmrec.forget.stages.checkpoints import check_update_method, set_update_method
from llmrec.workspace import POLICIES


def register(sub, common) -> None:
    p = sub.add_parser(
        "forget",
        parents=[common],
        help="record forget requests (JSON lines) and apply them to every artifact",
        description="Validate every request against the dataset, record them in the ledger "
        "(once each, by content hash) and bring every artifact stage up to date. Without "
        "--request, finishes stages left unfinished by an interrupted run.",
    )
    p.add_argument(
        "--request", type=nonempty, help="request file: JSON lines, one request per line"
    )
    p.add_argument(
        "--policy",
        choices=POLICIES,
        default=None,
        help="fix the workspace's forget policy for serving: retrain (default; a forgotten "
        "interaction's item may be recommended again exactly when a from-scratch build would) or "
        "suppress (never show a user an item whose interaction they had forgotten); the served "
        "log is scrubbed to the new policy",
    )
    p.add_argument(
        "--cf-method",
        default=None,
        metavar="METHOD",
        help="fix how trained CF checkpoints (llmrec train) are brought up to date: retrain "
        "(default; exact) or another unlearning method of 'llmrec unlearn', e.g. finetune "
        "(approximate: the audit then reports those checkpoints as approximate, naming it)",
    )
    p.add_argument(
        "--cf-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter of --cf-method (JSON value), e.g. --cf-set epochs=3",
    )
    p.set_defaults(func=cmd_forget)
    a = sub.add_parser(
        "audit",
        parents=[common],
        help="scan every artifact for forgotten records or stale versions (non-zero exit on a violation)",
        description="Check every artifact against the ledger: versions, registry, recorded "
        "content hashes, and what each stage can recompute cheaply from the retained data. "
        "Recorded hashes prove only that a file is the one registered; --deep also rebuilds "
        "the exact artifacts from the retained data and compares them byte for byte.",
    )
    a.add_argument(
        "--deep",
        action="store_true",
        help="also re-derive the exact artifacts (CF checkpoints and candidate sources "
        "retrained, LoRA shards re-tuned, retrieval stores rebuilt, the served blend re-fitted) "
        "outside the workspace and compare them byte for byte (slow: a training run per "
        "artifact); artifacts of approximate methods are named as not re-derivable",
    )
    a.add_argument(
        "--deep-shards",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --deep: re-tune at most N LoRA shards, drawn with --seed (default: all)",
    )
    a.set_defaults(func=cmd_audit)


def cmd_forget(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    requests = load_requests(args.request) if args.request else None
    if args.cf_set and args.cf_method is None:
        raise LlmrecError("--cf-set needs --cf-method")
    if args.cf_method is not None:  # checked now, saved only once the requests are valid
        cf_params = parse_overrides(args.cf_set)
        check_update_method(args.cf_method, cf_params)
    lines: list[str] = []

    def save_settings() -> None:
        """Run once the requests are valid: a rejected forget leaves workspace.json as it was."""
        if args.cf_method is not None:
            exact = set_update_method(ws, args.cf_method, cf_params)
            kind = "exact" if exact else "approximate"
            lines.append(f"CF checkpoints are brought up to date with {args.cf_method} ({kind})")
        if args.policy is not None and args.policy != ws.policy:
            for name, detail in set_policy(ws, args.policy).items():
                done = ", ".join(f"{k} {v}" for k, v in detail.items() if k != "policy")
                lines.append(f"forget policy {args.policy}: stage {name} re-applied ({done})")

    if requests is not None:
        result = forget(ws, requests, before_record=save_settings)
    else:
        save_settings()
        result = {"requests": [], **resume(ws)}
    result["policy"] = ws.policy
    result["cf_method"] = ws.cf_method
    for r in result["requests"]:
        state = "recorded" if r["created"] else "already recorded"
        lines.append(f"v{r['version']}: {r['description']} ({state})")
    for name, st in result["stages"].items():
        lines.append(
            f"stage {name}: applied versions {_versions(st['versions'])} in {st['seconds']:.3f}s"
        )
        for ck, d in st.get("checkpoints", {}).items():
            how = "exact" if d["exact"] else "approximate"
            what = "updated" if d["updated"] else "unchanged training pairs, weights kept"
            note = f"; {d['note']}" if d.get("note") else ""
            lines.append(f"  {ck}: {d['method']} ({how}), {what}{note}")
    lines.append(f"ledger version {result['ledger_version']}")
    emit(args, result, "\n".join(lines))
    return 0


def _versions(versions: list[int], most: int = 20) -> str:
    """``versions`` as a list, or its first and last and count when longer than ``most``."""
    if len(versions) <= most:
        return str(versions)
    return f"[{versions[0]}, ..., {versions[-1]}] ({len(versions)} versions)"


def cmd_audit(args: argparse.Namespace) -> int:
    if args.deep_shards is not None and not args.deep:
        raise LlmrecError("--deep-shards needs --deep")
    ws = open_workspace(args, read_only=True)
    deep = RederiveOptions(max_shards=args.deep_shards, seed=args.seed) if args.deep else None
    result = run_audit(ws, deep)
    lines = [f"audit at ledger v{result['ledger_version']}: scanned {', '.join(result['scanned'])}"]
    for name, st in result.get("stages", {}).items():
        detail = ""
        if st["approximate"]:
            detail = ": " + ", ".join(
                f"{a['artifact']} by {a['method']}" for a in st["approximate"]
            )
        elif st["artifacts"]:
            detail = f" ({len(st['artifacts'])} artifact(s))"
        lines.append(f"stage {name}: {st['status']}{detail}")
    for name, st in result.get("rederived", {}).items():
        if not (st["rederived"] or st["not_rederived"] or st["violations"]):
            continue  # nothing of the family here
        lines.append(
            f"deep {name}: {st['status']}, {len(st['rederived'])} re-derived "
            f"in {st['wall_s']:.1f}s ({st['cpu_s']:.1f} CPU s)"
        )
        lines += [f"  {n['artifact']}: {n['reason']}" for n in st["not_rederived"]]
    for f in result["violations"]:
        lines.append(f"VIOLATION {f['artifact']}: {f['problem']} ({f['path']})")
    if not result["ok"]:
        lines.append(f"{len(result['violations'])} violation(s)")
    elif any(st["approximate"] for st in result.get("stages", {}).values()):
        lines.append(
            "OK: no forgotten record or stale artifact found; approximate: the CF checkpoints "
            "named above were updated by an approximate unlearning method, not retrained"
        )
    else:
        lines.append("OK: no forgotten record or stale artifact found")
    if result["ok"] and "rederived" in result:
        lines[-1] += "; every re-derived artifact is byte-identical to its rebuild"
    emit(args, result, "\n".join(lines))
    return 0 if result["ok"] else 1
