"""``llmrec forget --request FILE``: record requests in the ledger and apply them everywhere."""

from __future__ import annotations

import argparse

from llmrec.cli.common import emit, nonempty, open_workspace
from llmrec.data.requests import load_requests
from llmrec.pipelines.audit import run_audit
from llmrec.pipelines.forget import forget, resume
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
    p.set_defaults(func=cmd_forget)
    a = sub.add_parser(
        "audit",
        parents=[common],
        help="scan every artifact for forgotten records or stale versions (non-zero exit on a violation)",
    )
    a.set_defaults(func=cmd_audit)


def cmd_forget(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    requests = load_requests(args.request) if args.request else None
    lines = []
    if args.policy is not None and args.policy != ws.policy:
        from llmrec.pipelines import served

        ws.set_policy(args.policy)
        rescrub = served.apply(ws, ws.view().version)
        lines.append(f"forget policy {args.policy}: served log scrubbed ({rescrub['scrubbed']})")
    if requests is not None:
        result = forget(ws, requests)
    else:
        result = {"requests": [], **resume(ws)}
    result["policy"] = ws.policy
    for r in result["requests"]:
        state = "recorded" if r["created"] else "already recorded"
        lines.append(f"v{r['version']}: {r['description']} ({state})")
    for name, st in result["stages"].items():
        lines.append(f"stage {name}: applied versions {st['versions']} in {st['seconds']:.3f}s")
    lines.append(f"ledger version {result['ledger_version']}")
    emit(args, result, "\n".join(lines))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    result = run_audit(ws)
    lines = [f"audit at ledger v{result['ledger_version']}: scanned {', '.join(result['scanned'])}"]
    for f in result["violations"]:
        lines.append(f"VIOLATION {f['artifact']}: {f['problem']} ({f['path']})")
    lines.append(
        "OK: no forgotten record or stale artifact found"
        if result["ok"]
        else f"{len(result['violations'])} violation(s)"
    )
    emit(args, result, "\n".join(lines))
    return 0 if result["ok"] else 1
