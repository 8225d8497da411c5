"""The ``checkpoints`` forget stage: trained and unlearned CF checkpoints (docs/design.md §2.3).

Its artifacts are ``artifacts/models/MODEL.pt`` (``llmrec train``) and
``artifacts/unlearned/MODEL-METHOD.pt`` (``llmrec unlearn``), found through the ledger's
registry (kind ``checkpoint``) and the workspace's files. Each checkpoint records, in its
``extra``:

* ``cf_method``: the method that brought it to its ledger version (``train`` for a checkpoint
  trained from scratch by ``llmrec train``) and ``exact``: whether that equals training from
  scratch on the retained data (``train`` and ``retrain`` do; every other method is
  approximate);
* ``train_hash``: the sha256 of the retained training pairs at its version;
* ``trained_at``: the ledger version its lineage was first trained at.

**Apply** brings every checkpoint older than the ledger to the newest version with its
*update method*: an unlearned checkpoint with its own method (and settings); a trained
checkpoint with the workspace's ``cf_method`` (``workspace.json``; ``retrain`` by default, set
with ``llmrec forget --cf-method NAME``), or with the method ``llmrec unlearn --method NAME``
names for its own requests. A request span that leaves a checkpoint's training
pairs unchanged (an attribute request, for a method that does not handle attributes) keeps its
weights; a method that cannot honour a request kind of the span falls back to ``retrain``
(said in the output). Applying twice at one version changes nothing.

**Audit**: a checkpoint must be at the ledger's version, agree with its registry row and have
been updated on the retained data (its ``train_hash``); an exact checkpoint must leave every
forgotten user's embedding rows at their seeded initial values (a model trained from scratch
without a user never moves them). A current checkpoint updated by an approximate method is
reported as ``approximate`` with its method: not a violation, not the exact guarantee either.

**Re-derivation** (``llmrec audit --deep``): an exact checkpoint is retrained from scratch on
the retained data at the version it claims, with its own hyper-parameters and seed
(:func:`llmrec.models.training.rebuild`), and must equal the stored weights bit for bit
(seeded CPU training is bit-reproducible at any torch thread count: measured 1 to 16). A
checkpoint updated by an approximate method is not a function of the retained data alone and is
named as not re-derivable.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.errors import ArtifactError, LlmrecError
from llmrec.forget.registry import register_stage
from llmrec.forget.stage import (
    Found,
    RederiveOptions,
    StageAudit,
    StageContext,
    finding,
    not_rederived,
)
from llmrec.workspace import Workspace

KIND = "checkpoint"
#: what ``llmrec train`` records: trained from scratch on the retained data (exact)
TRAINED = "train"


@dataclass
class Checkpoint:
    """One checkpoint of the workspace: registry ``name``, file ``path``, the version the
    registry holds for it (``None``: unregistered) and its registry detail."""

    name: str
    path: Path
    registered_version: int | None = None
    detail: dict = field(default_factory=dict)

    @property
    def unlearned(self) -> bool:
        return self.path.parent.name == "unlearned"


def checkpoint_files(ws: Workspace) -> list[tuple[str, Path]]:
    """``(name, path)`` of the checkpoint files in the workspace: ``model:MODEL`` for
    ``artifacts/models/MODEL.pt``, ``model:MODEL:METHOD`` for ``artifacts/unlearned/MODEL-METHOD.pt``."""
    art = ws.root / "artifacts"
    out = [(f"model:{p.stem}", p) for p in sorted((art / "models").glob("*.pt"))]
    for p in sorted((art / "unlearned").glob("*.pt")):
        model, _, method = p.stem.partition("-")
        out.append((f"model:{model}:{method}", p))
    return out


def checkpoints(ctx: StageContext) -> list[Checkpoint]:
    """Registered checkpoints plus unregistered checkpoint files."""
    arts = ctx.ledger.artifacts() if ctx.ledger is not None else []
    out = [
        Checkpoint(a["name"], Path(a["path"]), a["ledger_version"], a["detail"])
        for a in arts
        if a["kind"] == KIND
    ]
    known = {c.path.resolve() for c in out}
    for name, path in checkpoint_files(ctx.ws):
        if path.resolve() not in known:
            out.append(Checkpoint(name, path))
    return out


def train_hash(users: np.ndarray, items: np.ndarray) -> str:
    """sha256 of training pairs as a set (sorted distinct ``user``/``item`` keys, int64)."""
    keys = np.unique(
        np.stack([np.asarray(users, np.int64), np.asarray(items, np.int64)], 1), axis=0
    )
    return hashlib.sha256(np.ascontiguousarray(keys).tobytes()).hexdigest()


def method_is_exact(method: str) -> bool:
    """``train`` and the methods whose class says ``exact`` (retraining from scratch)."""
    from llmrec.unlearning import METHODS

    return method == TRAINED or bool(getattr(METHODS.get(method), "exact", False))


def is_exact(extra: dict) -> bool:
    """Whether a checkpoint's ``extra`` says it equals training from scratch (a checkpoint
    written before this was recorded: by its method)."""
    if "exact" in extra:
        return bool(extra["exact"])
    return method_is_exact(method_of(extra))


def method_of(extra: dict) -> str:
    """The method that brought a checkpoint to its version."""
    return str(extra.get("cf_method", extra.get("method", TRAINED)))


def update_method(ws: Workspace, ck: Checkpoint, model: Any) -> tuple[str, dict]:
    """``(method, params)`` a checkpoint is brought up to date with (module docstring): an
    unlearned checkpoint's own method and settings; else the workspace's ``cf_method`` with
    its parameters over the method's workspace defaults (e.g. its cache folder)."""
    from llmrec.unlearning import get_method

    extra = model.extra or {}
    if ck.unlearned and isinstance(extra.get("method"), str):
        settings = extra.get("settings") or {}
        params = {k: v for k, v in settings.items() if k not in ("method", "model_config")}
        return extra["method"], params
    method, params = ws.cf_method_of(ck.name)  # `llmrec unlearn --method` chooses for one run
    cls = get_method(method)
    base = str(getattr(model, "model_name", "") or model.config.get("model", ""))
    return method, {**cls.workspace_defaults(ws.root, base), **params}


def update_methods() -> list[str]:
    """The methods that may bring trained checkpoints up to date: the embedding unlearners
    that return a model of the checkpoint's own class (a shard method turns it into a sharded
    ensemble, which ``llmrec evaluate`` and the candidate sources do not read as a trained
    checkpoint)."""
    from llmrec.unlearning import METHODS
    from llmrec.unlearning.shard_unlearner import ShardedUnlearner

    return [
        n
        for n, c in METHODS.items()
        if c.family == "embedding" and not issubclass(c, ShardedUnlearner)
    ]


def check_update_method(method: str, params: dict) -> bool:
    """Check that ``method`` is one of :func:`update_methods` and that ``params`` are its
    parameters, of the right types and in range (:meth:`~llmrec.unlearning.method.Method.
    check_params`: a value saved in ``workspace.json`` must never hang or break a later
    forget); returns whether it is exact. :class:`LlmrecError` otherwise; nothing is saved."""
    from llmrec.unlearning import METHODS

    usable = update_methods()
    if method not in usable:
        raise LlmrecError(f"unknown CF method {method!r} (expected one of: {', '.join(usable)})")
    cls = METHODS[method]
    try:
        cls.check_params(params)
        cls(**params)
    except (TypeError, ValueError, LlmrecError) as exc:
        raise LlmrecError(f"bad --cf-set for {method}: {exc}") from None
    return bool(cls.exact)


def set_update_method(ws: Workspace, method: str, params: dict) -> bool:
    """Fix the workspace's ``cf_method`` (how trained checkpoints are brought up to date)
    once :func:`check_update_method` passed; returns whether it is exact."""
    exact = check_update_method(method, params)
    ws.set_cf_method(method, params)
    return exact


def record_extra(
    base: dict, method: str, exact: bool, pairs: tuple[np.ndarray, np.ndarray], **more: Any
) -> dict:
    """The checkpoint ``extra`` of a model brought to a version by ``method``: ``base`` (the
    earlier checkpoint's ``extra``: its unlearning method, source, ``trained_at`` ...) updated."""
    extra = {**base, **more}
    extra.update({"cf_method": method, "exact": bool(exact), "train_hash": train_hash(*pairs)})
    return extra


def save_checkpoint(
    ledger: Any, model: Any, path: Path, name: str, version: int, extra: dict
) -> None:
    """Write ``model`` at ledger ``version`` and register it (kind ``checkpoint``) with its
    method and exactness."""
    model.save(path, version, extra=extra)
    detail = {k: extra[k] for k in ("cf_method", "exact", "method", "source", "seed") if k in extra}
    ledger.register_artifact(name, KIND, path, version, detail)


def start_unlearned(
    ledger: Any,
    model: Any,
    path: Path,
    name: str,
    method: str,
    settings: dict,
    source: str,
    versions: list[int | None],
) -> bool:
    """Start the checkpoint ``llmrec unlearn`` writes: a copy of the trained ``model`` at its
    version, marked to be updated by ``method`` (with ``settings``), which the checkpoint stage
    then brings to the newest version. ``versions``: the ledger versions of the command's
    requests (``None``: not recorded yet). Returns False (nothing started) when ``path``
    already reflects them; :class:`LlmrecError` when the trained model already does, so
    ``method`` would have nothing to unlearn from it (``retrain`` of an exact model excepted)."""
    recorded = [v for v in versions if v is not None]
    newest = max(recorded) if len(recorded) == len(versions) and recorded else None
    if newest is not None and path.is_file():
        if int(_load(path).ledger_version) >= newest:
            return False
    base = int(model.ledger_version or 0)
    if newest is not None and newest <= base:
        if not (method == "retrain" and is_exact(model.extra or {})):
            raise LlmrecError(
                f"the trained checkpoint already reflects these requests (ledger v{base}): "
                f"{method} has nothing left to unlearn from it"
            )
    extra = {
        **(model.extra or {}),
        "method": method,
        "source": source,
        "settings": _plain({"method": method, **settings}),
    }
    extra.setdefault("trained_at", base)
    save_checkpoint(ledger, model, path, name, base, extra)
    return True


def unreadable(path: Path) -> str | None:
    """Why the checkpoint file at ``path`` is not a torch checkpoint at all (cheap: the file's
    zip header), which the stage could not update; ``None`` when it may be one."""
    if path.is_file() and not zipfile.is_zipfile(path):
        return (
            f"unreadable checkpoint {path} (not a torch checkpoint): "
            "retrain it with 'llmrec train' or delete it"
        )
    return None


def _plain(obj: dict) -> dict:
    """``obj`` as JSON types only (a checkpoint's ``extra`` is loaded with weights_only)."""
    return json.loads(json.dumps(obj, default=str))


def _load(path: Path):
    from llmrec.unlearning.checkpoint import load_any_model

    return load_any_model(path)


# ------------------------------------------------------------------------------ apply
def apply(ctx: StageContext) -> dict:
    """Bring every checkpoint to ``ctx.version`` (module docstring); per-checkpoint details."""
    out: dict[str, dict] = {}
    for ck in checkpoints(ctx):
        if not ck.path.is_file():
            continue  # deleted as a whole: nothing left to update
        try:
            model = _load(ck.path)
        except Exception as exc:  # an untrusted file: torch.load may fail in any way
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(
                f"unreadable checkpoint {ck.path} ({why}): retrain it with 'llmrec train' or "
                "delete it, then run 'llmrec forget' to finish"
            ) from None
        if model.ledger_version >= ctx.version:
            continue  # up to date (a newer claim is the audit's finding)
        out[ck.name] = update(ctx, ck, model)
    return {"checkpoints": out}


def update(ctx: StageContext, ck: Checkpoint, model: Any) -> dict:
    """Bring one checkpoint from its version to ``ctx.version``; returns what was done."""
    from llmrec.unlearning import UnknownMethodError, get_method
    from llmrec.unlearning.base import UnlearnTask

    ws = ctx.ws
    extra = dict(model.extra or {})
    try:
        method, params = update_method(ws, ck, model)
        cls = get_method(method)
    except UnknownMethodError as exc:
        raise LlmrecError(f"checkpoint {ck.name}: {exc}") from None
    handles = set(cls.handles)
    span = ctx.entries_between(model.ledger_version)
    # attribute requests change no training pair: only a method handling them acts on them
    data_kinds = {e.request.kind for e in span} - {"attribute"}
    note = None
    if not data_kinds <= handles:
        missing = ", ".join(sorted(data_kinds - handles))
        note = f"{method} does not handle {missing} requests: retrained"
        method, params = "retrain", {}
        cls = get_method(method)
        handles = set(cls.handles)
    requests = tuple(e.request for e in span if e.request.kind in handles)
    task = UnlearnTask(
        ws.dataset, ws.split, ctx.view_at(model.ledger_version), ctx.view, requests, ctx.version
    )
    acts = len(task.forget[0]) > 0 or ("attribute" in handles and bool(task.attribute_masks))
    if acts:
        new, record = cls(**params).unlearn(model, task)
        exact, used = bool(cls.exact), method
    else:  # the training pairs it reflects are unchanged: its weights are the update
        new, record, exact, used = model, None, is_exact(extra), method_of(extra)
    extra = record_extra(extra, used, exact, task.train, updated_from=int(model.ledger_version))
    extra.setdefault("trained_at", int(model.ledger_version))
    if note:
        extra["note"] = note
    elif "note" in extra:
        del extra["note"]
    if record is not None and ck.unlearned:
        extra["settings"] = _plain(record.settings)
    save_checkpoint(ctx.ledger, new, ck.path, ck.name, ctx.version, extra)
    out: dict = {
        "method": used,
        "exact": exact,
        "from_version": int(model.ledger_version),
        "ledger_version": ctx.version,
        "updated": record is not None,
    }
    if note:
        out["note"] = note
    if record is not None:
        out["seconds"] = round(record.seconds, 3)
        out["record"] = record.to_dict()
    return out


# ------------------------------------------------------------------------------ audit
def audit(ctx: StageContext) -> StageAudit:
    """Findings and approximate checkpoints (module docstring)."""
    from llmrec.data.split import TRAIN

    rep = StageAudit()
    view, ds = ctx.view, ctx.ws.dataset
    m = ctx.ws.split.mask(TRAIN, view.keep)
    retained = train_hash(ds.inter_user[m], ds.inter_item[m])
    for ck in checkpoints(ctx):
        if not ck.path.exists():
            continue  # deleted as a whole: nothing left to hold forgotten data
        rep.artifacts.append(ck.name)
        try:
            model = _load(ck.path)
        except Exception as exc:  # an untrusted file: torch.load may fail in any way
            rep.findings.append(
                finding(ck.name, ck.path, f"unreadable checkpoint ({str(exc)[:200]})")
            )
            continue
        v = int(model.ledger_version)
        if ck.registered_version is not None and v != ck.registered_version:
            rep.findings.append(
                finding(
                    ck.name,
                    ck.path,
                    f"file says ledger v{v}, registry says v{ck.registered_version}",
                )
            )
        if v > ctx.version:
            rep.findings.append(
                finding(
                    ck.name,
                    ck.path,
                    f"claims ledger v{v} but the ledger is at v{ctx.version}: "
                    "the ledger was lost or replaced",
                )
            )
            continue
        if v < ctx.version:
            rep.findings.append(
                finding(
                    ck.name, ck.path, f"stale: reflects ledger v{v}, ledger is at v{ctx.version}"
                )
            )
            continue
        extra = dict(model.extra or {})
        recorded = extra.get("train_hash")
        if recorded is not None and recorded != retained:
            rep.findings.append(
                finding(
                    ck.name,
                    ck.path,
                    "updated on other training pairs than the retained ones (training-pairs "
                    "hash differs): it may hold forgotten interactions",
                )
            )
        if is_exact(extra):
            from llmrec.models import CFModel  # torch: only when there are checkpoints

            if isinstance(model, CFModel):
                rep.findings += _forgotten_users_moved(ck, model, view)
        else:
            rep.approximate.append(
                {"artifact": ck.name, "path": str(ck.path), "method": method_of(extra)}
            )
    return rep


def _forgotten_users_moved(ck: Checkpoint, model: Any, view: Any) -> list[dict]:
    """An exact checkpoint never trained a forgotten user: its base rows are the seeded
    initial ones (a model trained from scratch without the user leaves them untouched)."""
    import torch

    from llmrec.unlearning.base import initial_tables

    gone = np.flatnonzero(view.forgotten_users)
    if not len(gone):
        return []
    init_users, _ = initial_tables(model)
    idx = torch.as_tensor(gone)
    rows = model.user_emb.weight.detach().cpu()[idx]
    moved = gone[~torch.all(rows == init_users.cpu()[idx], dim=1).numpy()]
    if not len(moved):
        return []
    tokens = ", ".join(str(view.dataset.user_tokens[u]) for u in moved[:5])
    return [
        finding(
            ck.name,
            ck.path,
            f"holds forgotten user(s) {tokens}: their embedding rows were trained (a model "
            "trained without them leaves them at the seeded initial values)",
        )
    ]


# ------------------------------------------------------------------------------ re-derivation
def rederive(ctx: StageContext) -> StageAudit:
    """Exact checkpoints retrained and compared byte for byte (module docstring)."""
    from llmrec.models import CFModel
    from llmrec.models.training import rebuild, retained_data, weight_differences

    rep = StageAudit()
    for ck in checkpoints(ctx):
        if not ck.path.is_file():
            continue
        try:
            model = _load(ck.path)
        except Exception as exc:  # noqa: BLE001 - an untrusted file; the audit names it
            rep.not_rederived.append(not_rederived(ck.name, ck.path, f"unreadable ({exc!s:.160})"))
            continue
        v, extra = int(model.ledger_version), dict(model.extra or {})
        why = None
        if not 0 <= v <= ctx.version:
            why = f"claims ledger v{v}, which the ledger does not hold"
        elif not is_exact(extra):
            why = f"not re-derivable: approximate method {method_of(extra)}"
        elif not isinstance(model, CFModel):
            why = f"not re-derivable: a {type(model).__name__}, not one trained model"
        if why:
            rep.not_rederived.append(not_rederived(ck.name, ck.path, why))
            continue
        rep.artifacts.append(ck.name)
        differ = weight_differences(model, rebuild(model, retained_data(ctx.ws, ctx.view_at(v))))
        if differ:
            rep.findings.append(
                finding(
                    ck.name,
                    ck.path,
                    f"weights differ from an exact retrain on the retained data at ledger v{v} "
                    f"({', '.join(differ)}): they may hold forgotten records",
                )
            )
    return rep


# ------------------------------------------------------------------------------ the stage
@register_stage
class CheckpointStage:
    """Trained and unlearned CF checkpoints, updated by their configured method."""

    name = "checkpoints"
    order = 400

    def discover(self, ws: Workspace) -> list[Found]:
        return [
            Found(name, KIND, path, unusable=unreadable(path))
            for name, path in checkpoint_files(ws)
        ]

    def apply(self, ctx: StageContext) -> dict:
        return apply(ctx)

    def audit(self, ctx: StageContext) -> StageAudit:
        return audit(ctx)

    def rederive(self, ctx: StageContext, options: RederiveOptions) -> StageAudit:
        return rederive(ctx)
