"""Candidate sources for the LLM path: who proposes the items the LLM re-ranks.

* ``ease`` (default) — the retrieval store's exactly unlearnable co-occurrence candidate model
  (:mod:`retrieval.candidates`), updated incrementally by the ``retrieval`` forget stage.
* ``bpr`` / ``lightgcn`` — a CF model trained on the retained train part; the
  ``candidate-source`` forget stage (:func:`apply`) retrains it from scratch on the retained data
  of the new ledger version (same seed and recipe), so after a forget it is bit-identical to a
  model built from scratch; the retraining time is reported as the stage's cost.
* ``bpr-original`` / ``lightgcn-original`` — the CRAGRU reference's choice: a model trained
  before the forget request and never updated. Leaky by construction: its scores are shaped by
  the forgotten interactions. Every description says :data:`LEAK_NOTE`, and :func:`audit`
  reports a violation on a workspace serving one after any forget request.

A source built in a workspace is saved under ``artifacts/candidates/<name>.pt`` plus
``<name>.json`` (its record) and registered in the ledger's artifact table (kind
:data:`KIND`), which is how the forget stage and the audit find it
(:class:`llmrec.forget.stages.candidate_source.CandidateSourceStage` calls :func:`apply` and
:func:`audit` with the forget runner's :class:`~llmrec.data.context.StageContext`).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from llmrec.data.context import StageAudit, StageContext, finding, not_rederived
from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
from llmrec.errors import ArtifactError
from llmrec.io import atomic_write_json
from llmrec.workspace import Workspace
from retrieval.candidates import top_n, user_rows

SOURCES = ("ease", "bpr", "lightgcn", "bpr-original", "lightgcn-original")
KIND = "candidate-source"
LEAK_NOTE = "includes forgotten data"


def is_leaky(name: str) -> bool:
    """A source trained before the forget requests and never updated."""
    return name.endswith("-original")


def model_of(name: str) -> str | None:
    """The CF model behind a source (``None`` for ``ease``)."""
    return None if name == "ease" else name.removesuffix("-original")


def _check(name: str) -> None:
    if name not in SOURCES:
        raise ValueError(f"candidate source must be one of {', '.join(SOURCES)}, got {name!r}")


def source_dir(ws: Workspace) -> Path:
    """``WORKSPACE/artifacts/candidates`` (created)."""
    path = ws.root / "artifacts" / "candidates"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_path(ws: Workspace, name: str) -> Path:
    """``WORKSPACE/artifacts/candidates/<name>.json`` (nothing created: readers only look)."""
    return ws.root / "artifacts" / "candidates" / f"{name}.json"


@dataclass
class CandidateSource:
    """One source: scores and top-n candidates for users (internal indices).

    ``trained_version``: the ledger version of the data its model was trained on;
    ``view``: the retained view the source serves under (forgotten items are never proposed,
    the user's retained train items are blocked).
    """

    name: str
    ws: Workspace
    view: RetainedView
    trained_version: int
    model: Any = None
    store: Any = None
    cost_s: float = 0.0
    _rows: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def leaky(self) -> bool:
        return is_leaky(self.name)

    @property
    def includes_forgotten_data(self) -> bool:
        """True when the model was trained before requests the ledger now holds."""
        return self.leaky and self.view.version > self.trained_version

    def describe(self) -> dict[str, Any]:
        out = {
            "source": self.name,
            "exact": not self.leaky,
            "trained_on_ledger_version": int(self.trained_version),
            "ledger_version": int(self.view.version),
            "build_seconds": round(float(self.cost_s), 3),
        }
        if self.leaky:
            out["note"] = LEAK_NOTE
        return out

    def label(self) -> str:
        """Name for reports; leaky sources always carry the note."""
        return f"{self.name} ({LEAK_NOTE})" if self.leaky else self.name

    def train_rows(self) -> list[np.ndarray]:
        """Each user's retained train items (blocked from their candidates)."""
        if self._rows is None:
            from llmrec.models.training import retained_data

            tu, ti = retained_data(self.ws, self.view).train
            n_users = self.ws.dataset.n_users
            order = np.argsort(tu, kind="stable")
            ptr = np.searchsorted(tu[order], np.arange(n_users + 1))
            self._rows = [np.unique(ti[order[ptr[u] : ptr[u + 1]]]) for u in range(n_users)]
        return self._rows

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Scores ``[len(users), n_items]`` (float64); forgotten items are ``-inf``."""
        import torch

        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if self.store is not None:
            return self.store.candidate_scores(users)
        with torch.no_grad():
            s = self.model.score(users).cpu().numpy().astype(np.float64)
        s[:, self.view.forgotten_items] = -np.inf
        return s

    def candidates(
        self, users: np.ndarray, n: int = 50, blocked: sp.csr_matrix | None = None
    ) -> np.ndarray:
        """Top-``n`` items per user ``[len(users), n]``, best first, padded with -1; never a
        forgotten item, never an item in ``blocked`` (default: the user's retained train
        items)."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if blocked is None:
            rows = self.train_rows()
            blocked = user_rows(self.ws.dataset.n_items, [rows[u] for u in users])
        return top_n(self.scores(users), n, blocked)


def _train(ws: Workspace, model: str, seed: int, view: RetainedView, params: dict):
    from llmrec.models.training import retained_data, train_model

    return train_model(ws, model, seed=seed, data=retained_data(ws, view), **params)


def build_source(
    ws: Workspace,
    name: str,
    seed: int = 2020,
    params: dict | None = None,
    save: bool = True,
) -> CandidateSource:
    """Build ``name`` on the workspace's newest retained data. ``ease`` loads the retrieval
    store (build it with ``llmrec index build``); CF sources train their model from scratch
    and (``save``) are saved and registered so that the forget stage and the audit see them."""
    _check(name)
    view = ws.view()
    t0 = time.perf_counter()
    if name == "ease":
        from retrieval.store import RetrievalStore

        store = RetrievalStore.load(ws)
        return CandidateSource(name, ws, view, store.ledger_version, store=store)
    params = dict(params or {})
    model = _train(ws, model_of(name), seed, view, params)
    src = CandidateSource(
        name, ws, view, view.version, model=model, cost_s=time.perf_counter() - t0
    )
    if save:
        _save(ws, src, seed, params)
    return src


def _save(
    ws: Workspace, src: CandidateSource, seed: int, params: dict, ledger: Ledger | None = None
) -> None:
    path = source_dir(ws) / f"{src.name}.pt"
    src.model.save(path, src.trained_version, {"source": src.name, "seed": seed})
    record = {
        "kind": KIND,
        **src.describe(),
        "model": model_of(src.name),
        "seed": int(seed),
        "params": params,
        "checkpoint": ws.stored_path(path),
    }
    atomic_write_json(record_path(ws, src.name), record)
    with ws.ledger() if ledger is None else nullcontext(ledger) as led:
        led.register_artifact(
            f"{KIND}:{src.name}", KIND, path, src.trained_version, {"source": src.name}
        )


def load_source(ws: Workspace, name: str) -> CandidateSource:
    """A source saved in the workspace; ArtifactError if absent or (exact CF sources) stale."""
    _check(name)
    view = ws.view()
    if name == "ease":
        return build_source(ws, name)
    from llmrec.models import load_model

    rec_path = record_path(ws, name)
    if not rec_path.is_file():
        raise ArtifactError(f"no candidate source {name!r} in {ws.root}: build it first")
    rec = json.loads(rec_path.read_text())
    model = load_model(ws.resolve_path(rec["checkpoint"]))
    if not is_leaky(name) and model.ledger_version != view.version:
        raise ArtifactError(
            f"candidate source {name!r} reflects ledger v{model.ledger_version}, the ledger is at "
            f"v{view.version}: run 'llmrec forget' to finish the pending stages"
        )
    return CandidateSource(name, ws, view, model.ledger_version, model=model)


def registered(ledger: Ledger | None) -> list[dict]:
    """The candidate sources registered in ``ledger`` (none without a ledger)."""
    if ledger is None:
        return []
    return [a for a in ledger.artifacts() if a["kind"] == KIND]


def apply(ctx: StageContext) -> dict:
    """The ``candidate-source`` forget stage's work: retrain every exact CF source from
    scratch on the retained data of ``ctx.view`` (same seed and recipe); leaky sources are left
    as they are and reported."""
    ws, view, ledger = ctx.ws, ctx.view, ctx.ledger
    version = view.version
    out: dict[str, Any] = {}
    for a in registered(ledger):
        name = a["detail"].get("source", "")
        rec_path = record_path(ws, name)
        if name not in SOURCES or not rec_path.is_file():
            continue
        rec = json.loads(rec_path.read_text())
        if is_leaky(name):
            trained = int(rec.get("trained_on_ledger_version", 0))
            out[name] = {
                "retrained": False,
                "note": LEAK_NOTE,
                "trained_on_ledger_version": trained,
            }
            continue
        if int(a["ledger_version"]) >= version:
            continue
        t0 = time.perf_counter()
        model = _train(ws, rec["model"], int(rec["seed"]), view, rec["params"])
        src = CandidateSource(name, ws, view, version, model=model, cost_s=time.perf_counter() - t0)
        _save(ws, src, int(rec["seed"]), rec["params"], ledger)
        out[name] = {"retrained": True, "seconds": round(src.cost_s, 3)}
    return {"sources": out}


def audit(ctx: StageContext) -> list[dict]:
    """Forget audit of the candidate sources: a leaky (``-original``) source trained before
    requests the ledger holds is a violation (it includes forgotten data); an exact source
    must reflect the newest ledger version and its checkpoint must agree with the registry."""
    view = ctx.view
    findings = []
    for a in registered(ctx.ledger):
        from llmrec.models import load_model  # torch: only when there are sources

        name, path = a["detail"].get("source", a["name"]), a["path"]
        art = f"{KIND}:{name}"
        try:
            m = load_model(path)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            findings.append(finding(art, path, f"unreadable ({exc})"))
            continue
        if m.ledger_version != int(a["ledger_version"]):
            findings.append(
                finding(
                    art,
                    path,
                    f"file says ledger v{m.ledger_version}, registry says v{a['ledger_version']}",
                )
            )
        if m.ledger_version < view.version:
            problem = (
                f"{LEAK_NOTE}: trained at ledger v{m.ledger_version}, never updated for the "
                f"requests up to v{view.version} (the reference's original-model candidates)"
                if is_leaky(name)
                else f"stale: reflects ledger v{m.ledger_version}, ledger is at v{view.version}"
            )
            findings.append(finding(art, path, problem))
    return findings


def rederive(ctx: StageContext) -> StageAudit:
    """``llmrec audit --deep`` of the candidate sources: each source's model retrained from
    scratch on the retained data at the version it claims (its own hyper-parameters and seed;
    a leaky source at the version it was trained at) must equal the stored weights bit for bit;
    a differing tensor is a finding naming it."""
    from llmrec.models import load_model
    from llmrec.models.training import rebuild, retained_data, weight_differences

    rep = StageAudit()
    for a in registered(ctx.ledger):
        name, path = a["detail"].get("source", a["name"]), a["path"]
        art = f"{KIND}:{name}"
        try:
            m = load_model(path)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            rep.not_rederived.append(not_rederived(art, path, f"unreadable ({str(exc)[:160]})"))
            continue
        v = int(m.ledger_version)
        if not 0 <= v <= ctx.version:
            rep.not_rederived.append(not_rederived(art, path, f"claims ledger v{v}"))
            continue
        rep.artifacts.append(art)
        differ = weight_differences(m, rebuild(m, retained_data(ctx.ws, ctx.view_at(v))))
        if differ:
            rep.findings.append(
                finding(
                    art,
                    path,
                    f"weights differ from a retrain on the retained data at ledger v{v} "
                    f"({', '.join(differ)}): they may hold forgotten records",
                )
            )
    return rep
