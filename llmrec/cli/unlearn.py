"""``llmrec unlearn``, ``llmrec attack-attributes``, ``llmrec attack-membership``.

``unlearn`` records the requests and applies them to every artifact stage through the same
runner as ``llmrec forget`` (so nothing is left pending), loads the trained checkpoint, applies
the method and
writes the unlearned checkpoint (``artifacts/unlearned/MODEL-METHOD.pt``, carrying the ledger
version it reflects, registered in the ledger) and a run folder with ``results.json``, a readable
``results.txt`` table and the resolved settings (``config.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from llmrec.cli.common import (
    emit,
    int_in,
    nonempty,
    nonneg_int,
    open_workspace,
    parse_overrides,
    positive_int,
)
from llmrec.errors import ArtifactError, LlmrecError
from llmrec.io import atomic_write_json, atomic_write_text

MODELS = ("bpr", "lightgcn")


def register(sub, common) -> None:
    p = sub.add_parser(
        "unlearn",
        parents=[common],
        help="apply an embedding unlearner to a trained CF model",
        description="Record the requests in the ledger, unlearn them from the trained checkpoint "
        "with METHOD (retrain, finetune, alteraser, lego, reverse-bpr) and write the unlearned "
        "checkpoint plus a run folder (results.json, results.txt, config.json).",
    )
    p.add_argument("--method", required=True, help="retrain|finetune|alteraser|lego|reverse-bpr")
    p.add_argument("--request", type=nonempty, required=True, help="request file (JSON lines)")
    p.add_argument("--model", default="bpr", help="base model: bpr or lightgcn (default: bpr)")
    p.add_argument(
        "--checkpoint", type=nonempty, default=None, help="unlearn this checkpoint instead"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method parameter (JSON value), e.g. --set damping=30",
    )
    p.set_defaults(func=cmd_unlearn)

    a = sub.add_parser(
        "attack-attributes",
        parents=[common],
        help="attribute-inference attack on a model's user embeddings (docs/design.md §5.4)",
    )
    _target_args(a)
    a.add_argument("--attributes", nargs="+", default=["gender", "age", "occupation"])
    a.add_argument("--attackers", nargs="+", default=["mlp", "gbdt"], help="mlp and/or gbdt")
    a.add_argument("--folds", type=int_in(2, 100), default=5)
    a.add_argument(
        "--repeats",
        type=int_in(1, 1000),
        default=1,
        help="independent balanced down-samplings",
    )
    a.add_argument("--min-class-size", type=positive_int, default=50)
    a.set_defaults(func=cmd_attack_attributes)

    m = sub.add_parser(
        "attack-membership",
        parents=[common],
        help="membership inference on forgotten pairs and their rank, compared with retrain",
    )
    _target_args(m)
    m.add_argument(
        "--since",
        type=nonneg_int,
        default=None,
        help="forgotten pairs are those removed after this ledger version "
        "(default: the trained checkpoint's version)",
    )
    m.add_argument("--attacker", default="logistic", help="logistic or gbdt")
    m.set_defaults(func=cmd_attack_membership)

    from llmrec.unlearning.unlearnrec import configure_pretrain_parser

    q = sub.add_parser(
        "unlearnrec-pretrain",
        parents=[common],
        help="pre-train (resumably) the UnlearnRec influence encoder of a trained model",
    )
    configure_pretrain_parser(q)
    for action in q._actions:  # its counts (requests, epochs, sizes) are all positive
        if action.type is int:
            action.type = positive_int
    q.set_defaults(func=cmd_unlearnrec_pretrain)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="bpr", help="base model: bpr or lightgcn (default: bpr)")
    p.add_argument(
        "--method",
        default=None,
        help="attack the checkpoint unlearned by METHOD (default: trained)",
    )
    p.add_argument("--checkpoint", type=nonempty, default=None, help="attack this checkpoint file")


# ---------------------------------------------------------------------------- helpers
def _check_model(name: str) -> None:
    if name not in MODELS:
        raise LlmrecError(f"unknown model {name!r} (expected one of: {', '.join(MODELS)})")


def _check_method(name: str) -> None:
    from llmrec.unlearning import METHODS

    if name not in METHODS:
        raise LlmrecError(f"unknown method {name!r} (expected one of: {', '.join(METHODS)})")


def unlearned_path(ws, model: str, method: str) -> Path:
    return ws.artifact_path("unlearned", f"{model}-{method}.pt")


def _load(path: Path, what: str):
    from llmrec.unlearning.sharded import load_any_model as load_model

    if not path.is_file():
        raise ArtifactError(f"no {what} checkpoint at {path}")
    try:
        return load_model(path)
    except Exception as exc:  # an untrusted file: torch.load may fail in any way
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"unreadable checkpoint {path}: {msg}") from None


def _trained(ws, name: str, checkpoint: str | None):
    from llmrec.cli.train import load_trained
    from llmrec.models.training import checkpoint_path

    if checkpoint:
        return _load(Path(checkpoint), "model"), Path(checkpoint)
    return load_trained(ws, name), checkpoint_path(ws, name)


def _target(ws, args):
    """The checkpoint an attack command looks at: --checkpoint, --method's, or the trained one."""
    _check_model(args.model)
    if args.checkpoint:
        return _load(Path(args.checkpoint), "model"), Path(args.checkpoint)
    if args.method:
        _check_method(args.method)
        path = unlearned_path(ws, args.model, args.method)
        if not path.is_file():
            raise ArtifactError(
                f"no {args.model} model unlearned with {args.method} in {ws.root}: run "
                f"'llmrec unlearn --method {args.method} --model {args.model} --request FILE' first"
            )
        return _load(path, "unlearned"), path
    return _trained(ws, args.model, None)


def _table(rows: list[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in rows)
    lines = []
    for k, v in rows:
        if isinstance(v, float):
            v = f"{v:.4f}"
        lines.append(f"  {k:<{width}}  {v}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- unlearn
def cmd_unlearn(args: argparse.Namespace) -> int:
    from llmrec.data.requests import load_requests
    from llmrec.evaluation import evaluate_model
    from llmrec.pipelines import forget as forget_pipeline
    from llmrec.privacy.membership import pair_ranks, rank_summary
    from llmrec.unlearning import make_task, make_unlearner

    _check_method(args.method)
    _check_model(args.model)
    ws = open_workspace(args)
    requests = load_requests(args.request)
    ds = ws.dataset
    for r in requests:
        r.validate(ds)
    model, source = _trained(ws, args.model, args.checkpoint)
    params = parse_overrides(args.set)
    if "seed" not in params and args.method != "retrain":
        params["seed"] = args.seed
    if args.method == "lego" and "cache_dir" not in params:
        params["cache_dir"] = str(ws.root / "artifacts" / "lego-cache" / args.model)
    if args.method == "unlearnrec" and "cache_dir" not in params:
        params["cache_dir"] = str(ws.root / "artifacts" / "unlearnrec")
    if args.method in ("sisa", "receraser") and "cache_dir" not in params:
        params["cache_dir"] = str(ws.root / "artifacts" / f"{args.method}-cache" / args.model)
    try:
        unlearner = make_unlearner(args.method, **params)
    except (TypeError, ValueError) as exc:
        raise LlmrecError(f"bad parameter for {args.method}: {exc}") from None
    # the same runner as `llmrec forget`: record once, then bring every artifact stage up to date
    summary = forget_pipeline.forget(ws, requests)
    recorded = [(r["version"], r["created"]) for r in summary["requests"]]
    version = max(v for v, _ in recorded)
    task = make_task(ws, requests, model)
    if task.version is None or task.version < version:
        task = make_task(ws, requests, model, version=version)
    new, record = unlearner.unlearn(model, task)
    path = unlearned_path(ws, args.model, args.method)
    new.save(
        path,
        task.version,
        extra={"method": args.method, "source": str(source), "settings": record.settings},
    )
    with ws.ledger() as led:
        led.register_artifact(
            f"model:{args.model}:{args.method}",
            "checkpoint",
            path,
            task.version,
            {"method": args.method, "source": str(source)},
        )
    data = task.retained_data()
    metrics = evaluate_model(new, data, "test")
    result: dict = {
        "method": args.method,
        "model": args.model,
        "ledger_version": task.version,
        "model_ledger_version": model.ledger_version,
        "requests": [
            {"version": v, "created": c, "description": r.describe()}
            for (v, c), r in zip(recorded, requests)
        ],
        "checkpoint": str(path),
        "record": record.to_dict(),
        "test": metrics,
    }
    rows = [
        ("method", args.method),
        ("model", args.model),
        ("ledger version", f"v{model.ledger_version} -> v{task.version}"),
        ("seconds", record.seconds),
        ("peak memory (MB)", record.peak_memory_mb),
        ("iterations", record.iterations),
        ("converged", record.converged),
        ("retained train pairs", record.n_retained),
        ("forgotten train pairs", record.n_forgotten),
        ("test users", metrics["n_users"]),
        ("NDCG@10", metrics["ndcg@10"]),
        ("Recall@10", metrics["recall@10"]),
    ]
    if record.n_forgotten:
        ranks = pair_ranks(new.score, ds.n_items, *task.forget, *task.train)
        result["forgotten_rank"] = rank_summary(ranks, ds.n_items)
        rows.append(("forgotten pairs: median rank", result["forgotten_rank"]["median_rank"]))
    if args.method == "lego":
        for a, w in record.info.get("weights", {}).items():
            rows.append((f"weight {a}", w))
    config = {
        "command": "unlearn",
        "method": args.method,
        "model": args.model,
        "seed": args.seed,
        "request_file": str(args.request),
        "requests": [r.to_dict() for r in requests],
        "source_checkpoint": str(source),
        "settings": record.settings,
    }
    run = ws.new_run(f"unlearn-{args.model}-{args.method}", config)
    text = f"unlearn {args.model} with {args.method}\n" + _table(rows)
    atomic_write_json(run / "results.json", result)
    atomic_write_text(run / "results.txt", text + "\n")
    result["run_dir"] = str(run)
    emit(args, result, f"{text}\ncheckpoint {path}\nrun {run}")
    return 0


# ---------------------------------------------------------------------------- privacy attacks
def cmd_attack_attributes(args: argparse.Namespace) -> int:
    from llmrec.privacy.attributes import ATTACKERS, attribute_inference

    ws = open_workspace(args)
    model, path = _target(ws, args)
    for a in args.attackers:
        if a not in ATTACKERS:
            raise LlmrecError(f"unknown attacker {a!r} (expected: {', '.join(ATTACKERS)})")
    ds = ws.dataset
    view = ws.view(model.ledger_version) if model.ledger_version else ws.view(0)
    users = np.flatnonzero(~view.forgotten_users)
    res = attribute_inference(
        model.user_embeddings(),
        ds,
        args.attributes,
        args.attackers,
        users=users,
        folds=args.folds,
        repeats=args.repeats,
        min_class_size=args.min_class_size,
        seed=args.seed,
    )
    result = {
        "checkpoint": str(path),
        "model": args.model,
        "ledger_version": model.ledger_version,
        "attributes": res,
    }
    lines = [
        f"attribute inference on {path} (ledger v{model.ledger_version})",
        f"  {'attribute':<11} {'attacker':<8} {'classes':>7} {'chance':>7} {'bal.acc':>8} "
        f"{'macroF1':>8} {'AUC':>7}",
    ]
    for a, entry in res.items():
        for att in args.attackers:
            r = entry[att]
            lines.append(
                f"  {a:<11} {att:<8} {r['n_classes']:>7d} {r['chance']:>7.3f} "
                f"{r['balanced_accuracy']:>8.3f} {r['macro_f1']:>8.3f} {r['auc']:>7.3f}"
            )
    text = "\n".join(lines)
    run = ws.new_run(
        f"attack-attributes-{args.model}", {"command": "attack-attributes", **vars_(args)}
    )
    atomic_write_json(run / "results.json", result)
    atomic_write_text(run / "results.txt", text + "\n")
    result["run_dir"] = str(run)
    emit(args, result, f"{text}\nrun {run}")
    return 0


def vars_(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def cmd_attack_membership(args: argparse.Namespace) -> int:
    from llmrec.data.parts import part_pairs
    from llmrec.data.split import TRAIN
    from llmrec.privacy.membership import membership_inference, pair_ranks, rank_summary

    ws = open_workspace(args)
    model, path = _target(ws, args)
    if args.attacker not in ("logistic", "gbdt"):
        raise LlmrecError(f"unknown attacker {args.attacker!r} (expected logistic or gbdt)")
    ds, split = ws.dataset, ws.split
    version = model.ledger_version or 0
    since = args.since
    if since is None:
        from llmrec.models.training import checkpoint_path

        trained = checkpoint_path(ws, args.model)
        since = _load(trained, "trained").ledger_version if trained.is_file() else 0
        since = min(since, version)
    before, after = ws.view(since), ws.view(version)
    fu, fi = part_pairs(ds, split, TRAIN, keep=before.keep & ~after.keep)
    if not len(fu):
        raise LlmrecError(
            f"no training pair was forgotten between ledger v{since} and v{version} "
            f"(the checkpoint's version); nothing to attack"
        )
    tu, ti = part_pairs(ds, split, TRAIN, keep=after.keep)
    keys = np.unique(ds.pair_keys)

    def attack(m) -> dict:
        mia = membership_inference(
            m.score, ds.n_items, fu, fi, tu, ti, keys, attacker=args.attacker, seed=args.seed
        )
        ranks = rank_summary(pair_ranks(m.score, ds.n_items, fu, fi, tu, ti), ds.n_items)
        return {"membership": mia.to_dict(), "forgotten_rank": ranks}

    result = {
        "checkpoint": str(path),
        "model": args.model,
        "since": since,
        "ledger_version": version,
        "forgotten_pairs": len(fu),
        "target": attack(model),
    }
    gold_path = unlearned_path(ws, args.model, "retrain")
    if gold_path.is_file() and gold_path != path:
        gold = _load(gold_path, "retrained")
        if gold.ledger_version == version:
            result["retrain"] = attack(gold)
            result["auc_gap"] = (
                result["target"]["membership"]["auc"] - result["retrain"]["membership"]["auc"]
            )
    t = result["target"]
    rows = [
        ("checkpoint", str(path)),
        ("forgotten pairs", result["forgotten_pairs"]),
        ("membership AUC", t["membership"]["auc"]),
        ("  threshold-attack AUC", t["membership"]["auc_threshold"]),
        ("  shadow AUC", t["membership"]["shadow_auc"]),
        ("forgotten median rank", t["forgotten_rank"]["median_rank"]),
    ]
    if "retrain" in result:
        rows += [
            ("retrain membership AUC", result["retrain"]["membership"]["auc"]),
            ("retrain median rank", result["retrain"]["forgotten_rank"]["median_rank"]),
            ("AUC gap to retrain", result["auc_gap"]),
        ]
    text = f"membership inference (ledger v{since} -> v{version})\n" + _table(rows)
    run = ws.new_run(
        f"attack-membership-{args.model}", {"command": "attack-membership", **vars_(args)}
    )
    atomic_write_json(run / "results.json", result)
    atomic_write_text(run / "results.txt", text + "\n")
    result["run_dir"] = str(run)
    emit(args, result, f"{text}\nrun {run}")
    return 0


def cmd_unlearnrec_pretrain(args: argparse.Namespace) -> int:
    from llmrec.unlearning.unlearnrec import cmd_pretrain

    out = cmd_pretrain(args, open_workspace(args))
    emit(args, out, f"encoder {out['artifact']} (ledger v{out['ledger_version']})")
    return 0
