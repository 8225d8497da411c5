"""``llmrec forget --request FILE``: record requests in the ledger and apply them everywhere."""

from __future__ import annotations

import argparse

from llmrec.cli.common import emit, open_workspace
from llmrec.data.requests import load_requests
from llmrec.pipelines.audit import run_audit
from llmrec.pipelines.forget import forget, resume


def register(sub, common) -> None:
    p = sub.add_parser(
        "forget",
        parents=[common],
        help="record forget requests (JSON lines) and apply them to every artifact",
        description="Validate every request against the dataset, record them in the ledger "
        "(once each, by content hash) and bring every artifact stage up to date. Without "
        "--request, finishes stages left unfinished by an interrupted run.",
    )
    p.add_argument("--request", help="request file: JSON lines, one request per line")
    p.set_defaults(func=cmd_forget)
    a = sub.add_parser(
        "audit",
        parents=[common],
        help="scan every artifact for forgotten records or stale versions (non-zero exit on a violation)",
    )
    a.set_defaults(func=cmd_audit)


def cmd_forget(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    if args.request:
        requests = load_requests(args.request)
        result = forget(ws, requests)
    else:
        result = {"requests": [], **resume(ws)}
    lines = []
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
