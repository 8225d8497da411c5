"""``llmrec forget --request FILE``: record requests in the ledger and apply them everywhere."""

from __future__ import annotations

import argparse

from llmrec.cli.common import emit, nonempty, open_workspace, parse_overrides
from llmrec.data.requests import load_requests
from llmrec.errors import LlmrecError
from llmrec.forget.audit import run_audit
from llmrec.forget.runner import forget, resume, set_policy
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
    )
    a.set_defaults(func=cmd_audit)


def _cf_method(method: str, settings: list[str]) -> tuple[str, dict, str]:
    """The checked ``--cf-method`` and ``--cf-set`` (nothing saved yet): name, parameters and
    the line to print."""
    from llmrec.unlearning import METHODS
    from llmrec.unlearning.shard_unlearner import ShardedUnlearner

    # an embedding unlearner that returns a model of the checkpoint's own class (a shard method
    # turns it into a sharded ensemble, which 'llmrec evaluate' and the candidate sources do not
    # read as a trained checkpoint)
    usable = [
        n
        for n, c in METHODS.items()
        if c.family == "embedding" and not issubclass(c, ShardedUnlearner)
    ]
    if method not in usable:
        raise LlmrecError(f"unknown CF method {method!r} (expected one of: {', '.join(usable)})")
    cls = METHODS[method]
    params = parse_overrides(settings)
    try:
        cls.check_params(params)
        cls(**params)
    except (TypeError, ValueError, LlmrecError) as exc:
        raise LlmrecError(f"bad --cf-set for {method}: {exc}") from None
    kind = "exact" if cls.exact else "approximate"
    return method, params, f"CF checkpoints are brought up to date with {method} ({kind})"


def cmd_forget(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    requests = load_requests(args.request) if args.request else None
    if args.cf_set and args.cf_method is None:
        raise LlmrecError("--cf-set needs --cf-method")
    cf = _cf_method(args.cf_method, args.cf_set) if args.cf_method is not None else None
    lines: list[str] = []

    def save_settings() -> None:
        """Run once the requests are valid: a rejected forget leaves workspace.json as it was."""
        if cf is not None:
            ws.set_cf_method(cf[0], cf[1])
            lines.append(cf[2])
        if args.policy is not None and args.policy != ws.policy:
            rescrub = set_policy(ws, args.policy)["served"]
            lines.append(
                f"forget policy {args.policy}: served log scrubbed ({rescrub['scrubbed']})"
            )

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
        lines.append(f"stage {name}: applied versions {st['versions']} in {st['seconds']:.3f}s")
        for ck, d in st.get("checkpoints", {}).items():
            how = "exact" if d["exact"] else "approximate"
            what = "updated" if d["updated"] else "unchanged training pairs, weights kept"
            note = f"; {d['note']}" if d.get("note") else ""
            lines.append(f"  {ck}: {d['method']} ({how}), {what}{note}")
    lines.append(f"ledger version {result['ledger_version']}")
    emit(args, result, "\n".join(lines))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    ws = open_workspace(args, read_only=True)
    result = run_audit(ws)
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
    emit(args, result, "\n".join(lines))
    return 0 if result["ok"] else 1
