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
import sys
import textwrap
from pathlib import Path

import numpy as np

from llmrec.cli.common import (
    MethodOption,
    emit,
    int_in,
    methods_help,
    nonempty,
    nonneg_int,
    open_workspace,
    parse_overrides,
    positive_int,
)
from llmrec.errors import ArtifactError, LlmrecError
from llmrec.io import atomic_write_json, atomic_write_text
from llmrec.privacy.attributes import ATTACKERS, DEFAULT_ATTRIBUTES

MODELS = ("bpr", "lightgcn")


def register(sub, common) -> None:
    p = sub.add_parser(
        "unlearn",
        parents=[common],
        help="apply an embedding unlearner to a trained CF model",
        description=textwrap.fill(
            "Record the requests in the ledger and bring the trained checkpoint "
            "(artifacts/models/MODEL.pt) up to date with METHOD, not with the workspace's CF "
            "method: one checkpoint, which the audit then reports as approximate by METHOD "
            "(exact for retrain); every other artifact is updated as by 'llmrec forget'. With "
            "--checkpoint, or a shard method (its ensemble is not a trained checkpoint), a "
            "separate checkpoint artifacts/unlearned/MODEL-METHOD.pt is written and kept up to "
            "date with METHOD. Writes a run folder (results.json, results.txt, config.json). "
            "Comparing methods is 'llmrec compare'."
        ),
        epilog=lambda: methods_help("embedding"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _method_arg(p, "unlearning method: {}", required=True)
    p.add_argument("--request", type=nonempty, required=True, help="request file (JSON lines)")
    p.add_argument("--model", default="bpr", help="base model: bpr or lightgcn (default: bpr)")
    p.add_argument(
        "--checkpoint",
        type=nonempty,
        default=None,
        help="unlearn this checkpoint instead, into a separate artifacts/unlearned/MODEL-METHOD.pt",
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
    a.add_argument(
        "--attributes",
        nargs="+",
        default=list(DEFAULT_ATTRIBUTES),
        help="user attributes to infer from the user embeddings",
    )
    a.add_argument(
        "--attackers", nargs="+", default=list(ATTACKERS), help=" and/or ".join(ATTACKERS)
    )
    a.add_argument(
        "--folds", type=int_in(2, 100), default=5, help="cross-validation folds of the attackers"
    )
    a.add_argument(
        "--repeats",
        type=int_in(1, 1000),
        default=1,
        help="independent balanced down-samplings",
    )
    a.add_argument(
        "--min-class-size",
        type=positive_int,
        default=50,
        help="attribute values with fewer users are merged into 'other'",
    )
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
        "(default: the version the checkpoint's base model was trained at)",
    )
    m.add_argument("--attacker", default="logistic", help="logistic or gbdt")
    m.set_defaults(func=cmd_attack_membership)

    q = sub.add_parser(
        "unlearnrec-pretrain",
        parents=[common],
        help="pre-train (resumably) the UnlearnRec influence encoder of a trained model",
    )
    configure_pretrain_parser(q)
    q.set_defaults(func=cmd_unlearnrec_pretrain)


def _method_arg(p: argparse.ArgumentParser, text: str, required: bool = False) -> None:
    """``--method``, its help ``text`` naming every registered method where it holds ``{}``."""
    p.add_argument(
        "--method",
        action=MethodOption,
        family="embedding",
        required=required,
        metavar="METHOD",
        help=text.format("%(methods)s"),
    )


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="bpr", help="base model: bpr or lightgcn (default: bpr)")
    _method_arg(p, "attack the checkpoint unlearned by METHOD ({}; default: the trained one)")
    p.add_argument("--checkpoint", type=nonempty, default=None, help="attack this checkpoint file")


# ---------------------------------------------------------------------------- helpers
def _check_model(name: str) -> None:
    if name not in MODELS:
        raise LlmrecError(f"unknown model {name!r} (expected one of: {', '.join(MODELS)})")


def unlearned_path(ws, model: str, method: str) -> Path:
    return ws.artifact_path("unlearned", f"{model}-{method}.pt")


def _load(path: Path, what: str):
    from llmrec.unlearning.checkpoint import load_any_model as load_model

    if not path.is_file():
        raise ArtifactError(f"no {what} checkpoint at {path}")
    return load_model(path)  # an unreadable file: one ArtifactError line


def _trained(ws, name: str, checkpoint: str | None):
    from llmrec.cli.train import load_trained
    from llmrec.models.training import checkpoint_path

    if checkpoint:
        return _load(Path(checkpoint), "model"), Path(checkpoint)
    return load_trained(ws, name), checkpoint_path(ws, name)


def _target(ws, args):
    """The checkpoint an attack command looks at: --checkpoint, --method's, or the trained one."""
    from llmrec.unlearning import get_method

    _check_model(args.model)
    if args.checkpoint:
        return _load(Path(args.checkpoint), "model"), Path(args.checkpoint)
    if args.method:
        get_method(args.method, "embedding")  # an unknown name: one line naming the known ones
        path = unlearned_path(ws, args.model, args.method)
        if not path.is_file():
            from llmrec.models.training import checkpoint_path

            trained = checkpoint_path(ws, args.model)
            if trained.is_file() and _load(trained, "trained").extra.get("cf_method") == (
                args.method
            ):  # `llmrec unlearn --method` updated the one trained checkpoint
                return _load(trained, "trained"), trained
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
def _bring_up_to_date(ws, since: int) -> dict:
    """Run the checkpoint stage now: a checkpoint started at ledger ``since`` is behind while
    the ledger has nothing pending for the stage."""
    from llmrec.forget.runner import stage_lock
    from llmrec.forget.stage import StageContext
    from llmrec.forget.stages.checkpoints import apply

    with stage_lock(ws), ws.ledger() as led:
        return apply(StageContext.open(ws, led, also=(int(since or 0),)))


def cmd_unlearn(args: argparse.Namespace) -> int:
    from llmrec.data.requests import load_requests
    from llmrec.evaluation import evaluate_model
    from llmrec.forget import runner as forget_pipeline
    from llmrec.forget.stages.checkpoints import start_unlearned
    from llmrec.privacy.membership import pair_ranks, rank_summary
    from llmrec.unlearning import get_method, make_task
    from llmrec.unlearning.shard_unlearner import ShardedUnlearner

    method = get_method(args.method, "embedding")
    _check_model(args.model)
    ws = open_workspace(args)
    requests = load_requests(args.request)
    ds = ws.dataset
    for r in requests:
        r.validate(ds)
    model, source = _trained(ws, args.model, args.checkpoint)
    defaults = method.workspace_defaults(ws.root, args.model)
    params = {**defaults, **parse_overrides(args.set)}
    if "seed" not in params and "seed" in method.param_names():
        params["seed"] = args.seed
    try:
        method.check_params(parse_overrides(args.set))
        unlearner = method(**params)
    except (TypeError, ValueError, LlmrecError) as exc:
        raise LlmrecError(f"bad parameter for {args.method}: {exc}") from None
    if args.checkpoint or issubclass(method, ShardedUnlearner):
        # a separate checkpoint, kept up to date with METHOD: it starts as the given (or
        # trained) one; a shard method's ensemble is not a trained checkpoint of its class
        path = unlearned_path(ws, args.model, args.method)
        name = f"model:{args.model}:{args.method}"
        with ws.ledger() as led:
            known = {e.request.content_hash: e.version for e in led.entries()}
            start_unlearned(
                led,
                model,
                path,
                name,
                args.method,
                unlearner.get_params(),
                ws.stored_path(source),
                [known.get(r.content_hash) for r in requests],
            )
        summary = forget_pipeline.forget(ws, requests)
        if name not in summary["stages"].get("checkpoints", {}).get("checkpoints", {}):
            # requests recorded before: no stage was pending, the new checkpoint still is
            summary["stages"]["checkpoints"] = _bring_up_to_date(ws, model.ledger_version)
    else:
        # one checkpoint: the runner of `llmrec forget` records the requests once and its
        # checkpoint stage brings the trained checkpoint to the newest version with METHOD
        # (not the workspace's CF method: no hidden retrain), every other artifact as usual
        path, name = source, f"model:{args.model}"
        chosen = {k: v for k, v in params.items() if k not in defaults}
        with ws.use_cf_method(name, args.method, chosen):
            summary = forget_pipeline.forget(ws, requests)
    recorded = [(r["version"], r["created"]) for r in summary["requests"]]
    done = summary["stages"].get("checkpoints", {}).get("checkpoints", {}).get(name, {})
    rec = done.get("record")
    new = _load(path, "unlearned")
    task = make_task(ws, requests, model)
    data = task.retained_data()
    metrics = evaluate_model(new, data, "test")
    result: dict = {
        "method": args.method,
        "model": args.model,
        "ledger_version": new.ledger_version,
        "model_ledger_version": model.ledger_version,
        "requests": [
            {"version": v, "created": c, "description": r.describe()}
            for (v, c), r in zip(recorded, requests)
        ],
        "checkpoint": str(path),
        # what brought the checkpoint to its version: METHOD, or retrain when METHOD cannot
        # honour a request kind (the note says so)
        "checkpoint_method": {"method": done.get("method"), "exact": done.get("exact")},
        "record": rec,
        "test": metrics,
    }
    rows = [
        ("method", args.method),
        ("model", args.model),
        ("ledger version", f"v{model.ledger_version} -> v{new.ledger_version}"),
    ]
    if rec is None:
        rows.append(("unlearned", "nothing to do (the checkpoint already reflects the requests)"))
    else:
        rows += [
            ("seconds", rec["seconds"]),
            ("peak memory (MB)", rec["peak_memory_mb"]),
            ("iterations", rec["iterations"]),
            ("converged", rec["converged"]),
            ("retained train pairs", rec["n_retained"]),
            ("forgotten train pairs", rec["n_forgotten"]),
        ]
    if done.get("note"):
        rows.append(("note", done["note"]))
    rows += [
        ("test users", metrics["n_users"]),
        ("NDCG@10", metrics["ndcg@10"]),
        ("Recall@10", metrics["recall@10"]),
    ]
    if len(task.forget[0]):
        ranks = pair_ranks(new.score, ds.n_items, *task.forget, *task.train)
        result["forgotten_rank"] = rank_summary(ranks, ds.n_items)
        rows.append(("forgotten pairs: median rank", result["forgotten_rank"]["median_rank"]))
    if rec is not None:
        rows += method.highlights(rec["info"])
    config = {
        "command": "unlearn",
        "method": args.method,
        "model": args.model,
        "seed": args.seed,
        "request_file": str(args.request),
        "requests": [r.to_dict() for r in requests],
        "source_checkpoint": ws.stored_path(source),
        "settings": rec["settings"] if rec is not None else new.extra.get("settings"),
    }
    run = ws.new_run(f"unlearn-{args.model}-{args.method}", config)
    text = f"unlearn {args.model} with {args.method}\n" + _table(rows)
    # the run's record names workspace files relative to it (a copied workspace names its own)
    atomic_write_json(run / "results.json", result | {"checkpoint": ws.stored_path(path)})
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
    run = _attack_run(ws, args, "attack-attributes", result, text)
    emit(args, result, f"{text}\nrun {run}")
    return 0


def vars_(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def _attack_run(ws, args: argparse.Namespace, command: str, result: dict, text: str) -> Path:
    """A run folder for a privacy attack: its arguments, ``results.json`` and ``results.txt``."""
    run = ws.new_run(f"{command}-{args.model}", {"command": command, **vars_(args)})
    atomic_write_json(run / "results.json", result)
    atomic_write_text(run / "results.txt", text + "\n")
    result["run_dir"] = str(run)
    return run


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
    if since is None:  # the version its lineage was trained at (kept as the stages update it)
        since = model.extra.get("trained_at")
        if not isinstance(since, int):
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
    run = _attack_run(ws, args, "attack-membership", result, text)
    emit(args, result, f"{text}\nrun {run}")
    return 0


# ---------------------------------------------------------------------------- unlearnrec-pretrain


def configure_pretrain_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of the pre-training command (``--workspace``/``--seed`` come from the CLI)."""
    p.add_argument("--model", default="bpr", help="trained model name in the workspace")
    p.add_argument("--requests", type=positive_int, default=32, help="simulated requests")
    p.add_argument("--epochs", type=positive_int, default=5, help="pre-training epochs")
    p.add_argument(
        "--hidden", type=positive_int, default=128, help="hidden size of the influence encoder"
    )
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")


def cmd_pretrain(args: argparse.Namespace, ws=None) -> dict:
    """Pre-train (or resume) the encoder of the workspace's trained ``--model`` into
    ``artifacts/unlearnrec``; returns a summary with the artifact path. ``ws``: an open
    :class:`~llmrec.workspace.Workspace` (default: ``args.workspace`` opened)."""
    from llmrec.data.split import TRAIN
    from llmrec.models.training import load_checkpoint
    from llmrec.unlearning.unlearnrec import UnlearnRec, pretrain_encoder
    from llmrec.workspace import Workspace

    if ws is None:
        ws = args.workspace if isinstance(args.workspace, Workspace) else Workspace(args.workspace)
    model = load_checkpoint(ws, args.model)
    view = ws.view(model.ledger_version)
    m = ws.split.mask(TRAIN, view.keep)
    train = (ws.dataset.inter_user[m], ws.dataset.inter_item[m])
    un = UnlearnRec(
        pretrain_requests=args.requests,
        pretrain_epochs=args.epochs,
        hidden=args.hidden,
        seed=args.seed,
        cache_dir=ws.root / "artifacts" / "unlearnrec",
    )
    path = un.artifact_path(model)
    art = pretrain_encoder(
        model,
        train,
        ledger_version=model.ledger_version,
        checkpoint_dir=path.with_suffix(".ckpt"),
        requests=args.requests,
        epochs=args.epochs,
        hidden=args.hidden,
        damping=un.damping,
        n_neg=un.n_neg,
        seed=args.seed,
        resume=not args.no_resume,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    art.save(path)
    return {
        "artifact": str(path),
        "ledger_version": art.ledger_version,
        "model": model.model_name,
        "pretrain_seconds": art.pretrain_seconds,
        "history": art.history,
    }


def cmd_unlearnrec_pretrain(args: argparse.Namespace) -> int:
    out = cmd_pretrain(args, open_workspace(args))
    emit(args, out, f"encoder {out['artifact']} (ledger v{out['ledger_version']})")
    return 0
