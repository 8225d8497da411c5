"""``llmrec data info|split``: what a dataset holds and how it is split."""

from __future__ import annotations

import argparse

import numpy as np

from llmrec.cli.common import emit, int_in, nonempty, open_workspace, positive_int, unit_float
from llmrec.data.split import PART_NAMES


def register(sub, common) -> None:
    p = sub.add_parser("data", help="inspect and split the dataset")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    info = dsub.add_parser(
        "info", parents=[common], help="counts, density, attribute distributions"
    )
    info.add_argument(
        "--top",
        type=positive_int,
        default=8,
        help="values shown per attribute (default: %(default)s)",
    )
    info.set_defaults(func=cmd_info)
    sp = dsub.add_parser(
        "split",
        parents=[common],
        help="fix the workspace's split (random 8:1:1 per user, or leave-one-out by time)",
    )
    sp.add_argument(
        "--method",
        choices=["random", "loo"],
        default="random",
        help="random: per-user random split by --ratios (RecBole's); loo: leave the last "
        "interaction out for test, the one before for valid",
    )
    sp.add_argument(
        "--ratios",
        type=unit_float,
        nargs=3,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VALID", "TEST"),
        help="train/valid/test shares of each user's interactions (random split)",
    )
    sp.set_defaults(func=cmd_split)
    sy = dsub.add_parser(
        "synth",
        parents=[common],
        help="write a synthetic atomic dataset (power-law activity, attribute-driven tastes)",
    )
    sy.add_argument(
        "--interactions",
        type=int_in(100, 10**9),
        default=100_000,
        help="number of interactions to generate",
    )
    sy.add_argument(
        "--users", type=int_in(2, 10**8), default=None, help="default: interactions / 50"
    )
    sy.add_argument(
        "--items", type=int_in(2, 10**8), default=None, help="default: interactions / 100"
    )
    sy.add_argument(
        "--out",
        type=nonempty,
        required=True,
        help="folder to write NAME/NAME.inter|.user|.item into",
    )
    sy.add_argument(
        "--name", type=nonempty, default="synthetic", help="dataset name (the files' stem)"
    )
    sy.set_defaults(func=cmd_synth)


def cmd_info(args: argparse.Namespace) -> int:
    ws = open_workspace(args, read_only=True)
    ds = ws.dataset
    view = ws.view()
    per_user = np.bincount(ds.inter_user, minlength=ds.n_users)
    per_item = np.bincount(ds.inter_item, minlength=ds.n_items)
    attrs = {}
    for a in ds.user_attributes:
        counts = ds.users[a].astype(str).value_counts()
        attrs[a] = {
            "distinct": int(len(counts)),
            "top": {k: int(v) for k, v in counts.head(args.top).items()},
        }
    result = {
        "dataset": ds.name,
        "source": ds.source,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_inter,
        "density": ds.n_inter / (ds.n_users * ds.n_items),
        "interactions_per_user": {
            "min": int(per_user.min()),
            "median": float(np.median(per_user)),
            "max": int(per_user.max()),
        },
        "interactions_per_item": {
            "min": int(per_item.min()),
            "median": float(np.median(per_item)),
            "max": int(per_item.max()),
        },
        "rating": None
        if ds.rating is None
        else {
            "min": float(np.nanmin(ds.rating)),
            "max": float(np.nanmax(ds.rating)),
            "mean": float(np.nanmean(ds.rating)),
        },
        "user_attributes": attrs,
        "item_fields": list(ds.items.columns),
        "ledger": view.summary(),
    }
    lines = [
        f"dataset {ds.name} ({ds.source})",
        f"  users {ds.n_users}  items {ds.n_items}  interactions {ds.n_inter}  density {result['density']:.4%}",
        f"  per user min/median/max {per_user.min()}/{np.median(per_user):g}/{per_user.max()}"
        f"   per item {per_item.min()}/{np.median(per_item):g}/{per_item.max()}",
    ]
    if result["rating"]:
        r = result["rating"]
        lines.append(f"  rating {r['min']:g}..{r['max']:g} mean {r['mean']:.3f}")
    for a, d in attrs.items():
        top = ", ".join(f"{k}:{v}" for k, v in d["top"].items())
        lines.append(f"  {a}: {d['distinct']} values; {top}")
    if result["item_fields"]:
        lines.append(f"  item fields: {', '.join(result['item_fields'])}")
    s = result["ledger"]
    lines.append(
        f"  ledger v{s['version']}: forgotten {s['forgotten_interactions']} interactions, "
        f"{s['forgotten_users']} users, {s['forgotten_items']} items"
    )
    emit(args, result, "\n".join(lines))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from llmrec.errors import LlmrecError

    if args.method == "random" and (args.ratios[0] <= 0 or args.ratios[1] + args.ratios[2] >= 1):
        raise LlmrecError("--ratios: TRAIN must be positive and VALID + TEST below 1")
    split_cfg = {
        "method": args.method,
        "seed": args.seed,
        "ratios": list(args.ratios) if args.method == "random" else [0.0, 0.0, 0.0],
    }
    ws = open_workspace(args, split=split_cfg)
    split = ws.split
    view = ws.view()
    counts = {PART_NAMES[p]: int(split.mask(p, view.keep).sum()) for p in PART_NAMES}
    result = {
        "dataset": ws.dataset.name,
        "split": split.config(),
        "retained_counts": counts,
        "ledger_version": view.version,
    }
    text = f"split {split.method} seed {split.seed}: " + "  ".join(
        f"{k} {v}" for k, v in counts.items()
    )
    emit(args, result, text)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from llmrec.data.synthetic import SyntheticSpec, write_synthetic
    from llmrec.errors import DataError

    if args.interactions < 100:
        raise DataError("--interactions must be at least 100")
    spec = SyntheticSpec(args.interactions, args.users, args.items, seed=args.seed)
    folder = write_synthetic(spec, args.out, args.name)
    n_users, n_items = spec.resolved()
    result = {
        "folder": str(folder),
        "name": args.name,
        "interactions": args.interactions,
        "users": n_users,
        "items": n_items,
        "seed": args.seed,
    }
    emit(
        args,
        result,
        f"wrote {args.name} ({args.interactions} interactions, {n_users} users, {n_items} items) to {folder}; "
        f"use --data-dir {args.out} --dataset {args.name}",
    )
    return 0
