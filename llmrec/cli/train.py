"""``llmrec train`` and ``llmrec evaluate``: CF base models on the retained data."""

from __future__ import annotations

import argparse
import json
import time

from llmrec.cli.common import (
    LazyChoices,
    check_override_types,
    emit,
    fmt_metrics,
    model_names,
    open_workspace,
    parse_overrides,
    positive_int,
    progress_enabled,
)
from llmrec.errors import ArtifactError, LlmrecError


def register(sub, common) -> None:
    p = sub.add_parser(
        "train", parents=[common], help="train a CF model (bpr, lightgcn) on the retained data"
    )
    p.add_argument(
        "--model",
        choices=LazyChoices(model_names),
        metavar="MODEL",
        default="bpr",
        help="CF model to train: %(choices)s",
    )
    p.add_argument(
        "--epochs", type=positive_int, default=None, help="override the tuned number of epochs"
    )
    p.add_argument("--dim", type=positive_int, default=None, help="embedding size")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="other hyper-parameter (JSON value)",
    )
    p.add_argument("--early-stop", action="store_true", help="early stopping on valid NDCG@10")
    p.set_defaults(func=cmd_train)
    e = sub.add_parser(
        "evaluate", parents=[common], help="evaluate a trained model (RecBole full ranking)"
    )
    e.add_argument(
        "--model",
        choices=LazyChoices(model_names),
        metavar="MODEL",
        default="bpr",
        help="trained CF model: %(choices)s",
    )
    e.add_argument(
        "--part", choices=["test", "valid"], default="test", help="split part to evaluate on"
    )
    e.set_defaults(func=cmd_evaluate)


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    if args.epochs is not None:
        out["epochs"] = args.epochs
    if args.dim is not None:
        out["dim"] = args.dim
    out.update(parse_overrides(args.set))
    check_hparams(args.model, out)
    return out


def check_hparams(model: str, params: dict) -> None:
    """``--set`` values of a CF model: known names, the defaults' types, sensible ranges."""
    import inspect

    from llmrec.models import MODEL_REGISTRY

    sig = inspect.signature(MODEL_REGISTRY[model].__init__)
    defaults = {
        k: p.default
        for k, p in sig.parameters.items()
        if p.default is not inspect.Parameter.empty and k not in ("seed", "device")
    }
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise LlmrecError(
            f"unknown hyper-parameter(s) for {model}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(defaults))})"
        )
    check_override_types(params, defaults, model)
    for k, v in params.items():
        d = defaults[k]
        if isinstance(d, bool) or not isinstance(d, (int, float)):
            continue
        if isinstance(d, int) and d > 0 and not 1 <= v <= 2**31 - 1:
            raise LlmrecError(f"--set {k}={v}: must be a positive integer")
        if isinstance(d, float) and not 0 <= v < 1e6:
            raise LlmrecError(f"--set {k}={v}: must be in [0, 1e6)")
        if k == "lr" and v <= 0:
            raise LlmrecError(f"--set lr={v}: must be positive")


def cmd_train(args: argparse.Namespace) -> int:
    from llmrec.evaluation import evaluate_model
    from llmrec.forget.stages.checkpoints import record_extra, save_checkpoint
    from llmrec.models.training import checkpoint_path, retained_data, train_model

    overrides = _overrides(args)
    ws = open_workspace(args)
    data = retained_data(ws)
    if len(data.train[0]) == 0:
        raise LlmrecError(
            f"no retained training interaction in {ws.root} (every one was forgotten): "
            "nothing to train on"
        )
    t0 = time.perf_counter()
    try:
        model = train_model(
            ws,
            args.model,
            seed=args.seed,
            data=data,
            progress=progress_enabled(args),
            early_stop=args.early_stop,
            **overrides,
        )
    except (TypeError, ValueError) as exc:
        raise LlmrecError(f"bad hyper-parameter for {args.model}: {exc}") from None
    seconds = time.perf_counter() - t0
    path = checkpoint_path(ws, args.model)
    extra = record_extra({}, "train", True, data.train, trained_at=data.version, seed=args.seed)
    with ws.ledger() as led:
        save_checkpoint(led, model, path, f"model:{args.model}", data.version, extra)
    metrics = evaluate_model(model, data, "test")
    run = ws.new_run(
        f"train-{args.model}",
        {"command": "train", "model": args.model, "seed": args.seed, "hparams": model.config},
    )
    result = {
        "model": args.model,
        "seed": args.seed,
        "ledger_version": data.version,
        "train_seconds": seconds,
        "epochs": len(model.history),
        "checkpoint": str(path),
        "run_dir": str(run),
        "test": metrics,
    }
    # the run's record names workspace files relative to it (a copied workspace names its own)
    stored = result | {"checkpoint": ws.stored_path(path), "run_dir": ws.stored_path(run)}
    (run / "results.json").write_text(json.dumps(stored, indent=2))
    text = (
        f"{args.model}: trained {len(model.history)} epochs in {seconds:.1f}s on ledger v{data.version} "
        f"({len(data.train[0])} train pairs)\n"
        f"test (RecBole full ranking, {metrics['n_users']} users):\n{fmt_metrics(metrics)}\n"
        f"checkpoint {path}\nrun {run}"
    )
    emit(args, result, text)
    return 0


def load_trained(ws, name: str):
    """The workspace's trained checkpoint of ``name``; one clear error if it is unreadable."""
    from llmrec.models.training import checkpoint_path, load_checkpoint

    try:
        return load_checkpoint(ws, name)
    except LlmrecError:
        raise
    except Exception as exc:  # an untrusted file: torch.load may fail in any way
        path = checkpoint_path(ws, name)
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"unreadable checkpoint {path} ({why}); retrain it with 'llmrec train --model {name}'"
        ) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from llmrec.evaluation import evaluate_model
    from llmrec.models.training import retained_data

    ws = open_workspace(args, read_only=True)
    model = load_trained(ws, args.model)
    with ws.ledger() as led:
        current = led.version
    data = retained_data(ws)
    metrics = evaluate_model(model, data, args.part)
    stale = model.ledger_version != current
    result = {
        "model": args.model,
        "part": args.part,
        "model_ledger_version": model.ledger_version,
        "ledger_version": current,
        "stale": stale,
        "metrics": metrics,
    }
    note = (
        f" (STALE: trained at v{model.ledger_version}, ledger is at v{current}; retrain or unlearn)"
        if stale
        else ""
    )
    emit(args, result, f"{args.model} on {args.part}{note}:\n{fmt_metrics(metrics)}")
    return 0
