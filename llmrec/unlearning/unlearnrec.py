"""UnlearnRec (Chen, Xia & Huang, "Pre-training for Recommendation Unlearning", SIGIR 2025): a
pre-trained *influence encoder* maps an unlearning request and the current embeddings to an
embedding update; at request time one forward pass plus a few fine-tuning steps.

**Space.** The final (scoring) embeddings ``P`` (users) and ``Q`` (items), as in AltEraser: the
score is ``P Q^T`` for both BPR-MF and LightGCN, so the encoder is model-agnostic. The result is
written back into a clone of the input model (same class; LightGCN gets the retained graph and
base tables solved by :func:`llmrec.unlearning.embeddings.assign_final`).

**What the encoder is trained to produce (the documented choice of target).** Instead of
regressing the output of a proxy optimiser, the encoder is trained to *minimise the proxy's
objective directly* (amortised optimisation), which has no solver error in its target. The
objective is AltEraser's residual objective on fixed BPR triples ``t = (u, i, j)`` (``n_neg``
seeded negatives per training pair)::

    J(P, Q) = L_ret(P, Q) - <G0, (P, Q)> + (damping / 2) ||(P, Q) - (P0, Q0)||^2,
    L(P, Q) = sum_t softplus(-(p_u . (q_i - q_j))),   G0 = grad L_all(P0, Q0)

whose gradient at the trained point is ``-grad L_forget(P0, Q0)``: the update is driven by the
forgotten data alone and its minimiser is the warm-started "retrain" of the influence-function
view (what a few exact AltEraser sweeps approximate). Its minimiser for a simulated request is
the embedding change the encoder learns to predict.

**Rows.** The encoder updates the *touched* rows: users that lose pairs but keep some, the
items of forgotten pairs and the sampled negatives of forgotten triples (rows further away keep
their values: the objective's second-order effects on them are not modelled). A user left
without any retained pair is not predicted: with ``empty_rows="zero"`` (default) its row becomes
0, i.e. no preference at all (every item ties) — the expectation of what retraining gives it (its
seeded random row, whose ranking is noise); ``"init"`` copies that seeded row (divided by
``L + 1`` for LightGCN). Never a shrunken copy of the old row: it would rank items as before,
which a scale-free, score-based membership attack detects.

**Encoder.** One MLP for user rows and one for item rows over per-row features: the current
embedding, the forget gradient ``g`` (the influence signal), the diagonal-Newton step
``g / (diag H_ret + damping)``, the mean embedding of the removed and of the retained
counterparts, the diagonal curvature and counts (log removed, log retained, removed share,
forgotten-negative occurrences). Output: ``alpha(x) * newton + scale * mlp(x)`` (``alpha``
starts at 1/2). Vector inputs are divided by scales measured on the pre-training requests.

**Pre-training** (:func:`pretrain_encoder`, separate and resumable): ``requests`` simulated
removals drawn from the model's training pairs (a mixture, each with a random size: random users'
whole histories, random interactions, random users losing part of their history, random items'
interactions), ``epochs`` passes with Adam over the per-request objective ``J / n_forget``; after
every epoch a checkpoint (encoder, optimiser, history) is written atomically, and a run resumes
from the last one. The result is an :class:`EncoderArtifact` recording the ledger version of the
data it was trained on, the model fingerprint and a hash of the training pairs.

The request-independent statistics (triples, their scores at the trained point, ``G0``, the
diagonal curvature, per-row sums of counterpart embeddings) are computed once by pre-training and
stored in the artifact, so a request only pays for its own rows.

**Request time** (:class:`UnlearnRec`): features of the real request, one forward pass of the
encoder, then ``finetune_steps`` fine-tuning steps on the predicted update: gradient steps on
this request's ``J`` (the pre-training objective, so the steps refine rather than fight the
prediction) preconditioned by the diagonal curvature bounds, step ``finetune_eta``; then the
data-less users' rows and the write-back. Pre-training (or loading) the encoder is excluded from
the record's clock and reported apart.

Command line: ``python -m llmrec.unlearning.unlearnrec --workspace W --model bpr`` pre-trains (or
resumes) the encoder of the workspace's trained model into ``W/artifacts/unlearnrec`` (see
:func:`cmd_pretrain`), where ``UnlearnRec(cache_dir=...)`` and workspace runs find it.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmrec.io import atomic_save
from llmrec.models import CFModel
from llmrec.unlearning.base import (
    Monitor,
    Pairs,
    Unlearner,
    UnlearnTask,
    clone,
    initial_tables,
    sample_triples,
)
from llmrec.unlearning.embeddings import assign_final, layers
from llmrec.unlearning.registry import register_method

ARTIFACT_FORMAT = 1
#: simulated request kinds of the pre-training mixture
SIMULATION_KINDS = ("users", "interactions", "partial-users", "items")
N_SCALARS = 5


# ---------------------------------------------------------------------------- fingerprints


def model_fingerprint(model: CFModel) -> str:
    """SHA-256 of a model's class, config and parameters (identifies the trained weights)."""
    h = hashlib.sha256(model.model_name.encode())
    h.update(repr(sorted((k, str(v)) for k, v in model.config.items())).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pairs_hash(pairs: Pairs) -> str:
    """SHA-256 of training pairs (order-sensitive, int64)."""
    h = hashlib.sha256()
    for a in pairs:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- the objective


class ResidualProblem:
    """The residual objective of one trained model on its training pairs (module docstring).

    The request-independent part (fixed triples, their scores at the trained point, ``G0``, the
    diagonal curvature and the per-row sums of counterpart embeddings over all training pairs)
    is computed once — by pre-training, and stored in the encoder artifact (:meth:`state`) — so
    that :meth:`request` only touches the forgotten pairs: it turns a removal mask over the
    training pairs into a :class:`RequestData` (features + the objective restricted to the rows
    it updates).

    Scores go through the dense ``P Q^T`` when the user × item matrix has at most
    ``dense_limit`` cells (a few GEMMs; on CPU far faster than row gathers, whose backward is a
    serial ``index_add``), through row gathers otherwise.
    """

    STATE_KEYS = ("u", "i", "j", "z0", "g0u", "g0i", "hu", "hi", "sum_u", "sum_i")

    def __init__(
        self,
        model: CFModel,
        train: Pairs,
        damping: float = 30.0,
        n_neg: int = 1,
        seed: int = 2020,
        empty_rows: str = "zero",
        dense_limit: int = 1 << 25,
        state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if empty_rows not in ("zero", "init"):
            raise ValueError(f"empty_rows must be 'zero' or 'init', got {empty_rows!r}")
        self.n_users, self.n_items = nu, ni = model.n_users, model.n_items
        self.damping = float(damping)
        self.n_neg = int(n_neg)
        p0, q0 = model.final_embeddings()
        self.p0 = p0.detach().cpu().to(torch.float32).clone()
        self.q0 = q0.detach().cpu().to(torch.float32).clone()
        self.dim = int(self.p0.shape[1])
        self.dense = nu * ni <= dense_limit
        self.pair_u = torch.as_tensor(np.asarray(train[0]), dtype=torch.int64)
        self.pair_i = torch.as_tensor(np.asarray(train[1]), dtype=torch.int64)
        self.n_pair_u = torch.bincount(self.pair_u, minlength=nu)
        self.n_pair_i = torch.bincount(self.pair_i, minlength=ni)
        self.pair = torch.arange(self.pair_u.numel()).repeat_interleave(self.n_neg)
        if state is not None:
            if int(state["u"].numel()) != int(self.pair.numel()):
                raise ValueError("stored UnlearnRec statistics do not match the training pairs")
            for k in self.STATE_KEYS:
                v = state[k]
                setattr(self, k, v.to(torch.int64) if k in ("u", "i", "j") else v)
        else:
            self.u, self.i, self.j = sample_triples(train[0], train[1], nu, ni, n_neg, seed)
        self.ki, self.kj = self.u * ni + self.i, self.u * ni + self.j
        if state is None:
            with torch.no_grad():
                everything = torch.arange(self.u.numel())
                self.z0 = self.z(self.p0, self.q0, everything)
                self.g0u, self.g0i = self._dense_or_rows(-torch.sigmoid(-self.z0), -1.0)
                w = torch.sigmoid(self.z0) * torch.sigmoid(-self.z0)
                self.hu, self.hi = self._dense_or_rows(w, 1.0, squared=True)
                self.sum_u = _segment_sum(self.pair_u, self.q0[self.pair_i], nu)
                self.sum_i = _segment_sum(self.pair_i, self.p0[self.pair_u], ni)
        if empty_rows == "init":  # the seeded row retraining leaves a user without data
            self.reset_rows = initial_tables(model)[0].to(torch.float32) / (layers(model) + 1)
        else:  # no information at all: every item ties
            self.reset_rows = torch.zeros_like(self.p0)

    def state(self) -> dict[str, torch.Tensor]:
        """The request-independent statistics (triples as int32)."""
        return {
            k: getattr(self, k).to(torch.int32) if k in ("u", "i", "j") else getattr(self, k)
            for k in self.STATE_KEYS
        }

    # ------------------------------------------------------------------ primitives
    def z(self, p: torch.Tensor, q: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        """Score differences ``p_u . (q_i - q_j)`` of the triples ``sel`` (differentiable)."""
        if self.dense:
            s = (p @ q.T).reshape(-1)
            return s[self.ki[sel]] - s[self.kj[sel]]
        u, i, j = self.u[sel], self.i[sel], self.j[sel]
        return (p[u] * (q[i] - q[j])).sum(1)

    def _dense_or_rows(
        self, c: torch.Tensor, sign: float, squared: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Over *all* triples: ``sum_t c_t (q_i + sign q_j)`` per user and ``c_t p_u`` added to
        ``i`` (and ``sign`` times to ``j``) per item; with ``squared``, of the squared vectors
        (``sum_t c_t (q_i^2 + q_j^2)``, ``c_t p_u^2`` to both items: curvature bounds)."""
        p, q = (self.p0.pow(2), self.q0.pow(2)) if squared else (self.p0, self.q0)
        if self.dense:
            m = torch.zeros(self.n_users * self.n_items)
            m.index_add_(0, self.ki, c).index_add_(0, self.kj, sign * c)
            m = m.view(self.n_users, self.n_items)
            return m @ q, m.T @ p
        return self._rows(c, sign, torch.arange(self.u.numel()), squared)

    def _rows(
        self, c: torch.Tensor, sign: float, sel: torch.Tensor, squared: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`_dense_or_rows` over the triples ``sel`` only, by row gathers."""
        p, q = (self.p0.pow(2), self.q0.pow(2)) if squared else (self.p0, self.q0)
        u, i, j = self.u[sel], self.i[sel], self.j[sel]
        gu = _segment_sum(u, c[:, None] * (q[i] + sign * q[j]), self.n_users)
        cu = c[:, None] * p[u]
        gi = _segment_sum(torch.cat([i, j]), torch.cat([cu, sign * cu]), self.n_items)
        return gu, gi

    def request(self, removed: np.ndarray | torch.Tensor) -> RequestData:
        """Features and restricted objective of removing the training pairs ``removed`` (bool).

        Work is proportional to the request: the statistics of the retained data are those of
        all training data minus those of the removed pairs / forgotten triples.
        """
        removed_t = torch.as_tensor(np.asarray(removed), dtype=torch.bool)
        nu, ni = self.n_users, self.n_items
        p0, q0 = self.p0, self.q0
        fgt_mask = removed_t[self.pair]
        fgt = torch.nonzero(fgt_mask).squeeze(1)
        rp = torch.nonzero(removed_t).squeeze(1)
        fpu, fpi = self.pair_u[rp], self.pair_i[rp]
        n_rem_u = torch.bincount(fpu, minlength=nu)
        n_rem_i = torch.bincount(fpi, minlength=ni)
        n_ret_u, n_ret_i = self.n_pair_u - n_rem_u, self.n_pair_i - n_rem_i
        n_negf_i = torch.bincount(self.j[fgt], minlength=ni)
        reset = torch.nonzero((n_rem_u > 0) & (n_ret_u == 0)).squeeze(1)
        users = torch.nonzero((n_rem_u > 0) & (n_ret_u > 0)).squeeze(1)
        items = torch.nonzero((n_rem_i > 0) | (n_negf_i > 0)).squeeze(1)
        with torch.no_grad():
            z = self.z0[fgt]
            # the influence signal: gradient of the forgotten triples at the trained point
            gfu, gfi = self._rows(-torch.sigmoid(-z), -1.0, fgt)
            wu, wi = self._rows(torch.sigmoid(z) * torch.sigmoid(-z), 1.0, fgt, squared=True)
            hu = (self.hu - wu).clamp_min(0) + self.damping
            hi = (self.hi - wi).clamp_min(0) + self.damping
            rem_su = _segment_sum(fpu, q0[fpi], nu)
            rem_si = _segment_sum(fpi, p0[fpu], ni)

            def mean(total: torch.Tensor, count: torch.Tensor, rows: torch.Tensor):
                return total[rows] / count[rows].clamp_min(1)[:, None].to(total.dtype)

            def scalars(n_rem, n_ret, n_neg, rows) -> torch.Tensor:
                a, b, c = (x[rows].to(torch.float32) for x in (n_rem, n_ret, n_neg))
                one = torch.ones_like(a)
                share = a / (a + b).clamp_min(1)
                return torch.stack([torch.log1p(a), torch.log1p(b), share, torch.log1p(c), one], 1)

            feats_u = RowFeatures(
                p0[users], gfu[users], hu[users],
                mean(rem_su, n_rem_u, users), mean(self.sum_u - rem_su, n_ret_u, users),
                scalars(n_rem_u, n_ret_u, torch.zeros_like(n_rem_u), users),
            )  # fmt: skip
            feats_i = RowFeatures(
                q0[items], gfi[items], hi[items],
                mean(rem_si, n_rem_i, items), mean(self.sum_i - rem_si, n_ret_i, items),
                scalars(n_rem_i, n_ret_i, n_negf_i, items),
            )  # fmt: skip
            # retained triples touching an updated row: the only ones whose loss can change
            upd_u = torch.zeros(nu, dtype=torch.bool)
            upd_u[users] = True
            upd_i = torch.zeros(ni, dtype=torch.bool)
            upd_i[items] = True
            touch = upd_u[self.u] | upd_i[self.i] | upd_i[self.j]
            rel = torch.nonzero(touch & ~fgt_mask).squeeze(1)
        return RequestData(
            users=users,
            items=items,
            reset=reset,
            feats_u=feats_u,
            feats_i=feats_i,
            rel=rel,
            loss0=float(F.softplus(-self.z0[rel]).sum()),
            g0u=self.g0u[users],
            g0i=self.g0i[items],
            n_forget=int(fgt.numel()),
        )

    def objective(self, data: RequestData, du: torch.Tensor, di: torch.Tensor) -> torch.Tensor:
        """``J(P0 + dU, Q0 + dI) - J(P0, Q0)`` (differentiable in ``du``, ``di``)."""
        # rows are distinct: a scatter (index_put) instead of a serial index_add
        p = self.p0.index_put((data.users,), self.p0[data.users] + du)
        q = self.q0.index_put((data.items,), self.q0[data.items] + di)
        loss = F.softplus(-self.z(p, q, data.rel)).sum() - data.loss0
        lin = (data.g0u * du).sum() + (data.g0i * di).sum()
        return loss - lin + 0.5 * self.damping * (du.pow(2).sum() + di.pow(2).sum())

    def refine(
        self, data: RequestData, du: torch.Tensor, di: torch.Tensor, steps: int, eta: float = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """``steps`` preconditioned gradient steps on :meth:`objective` (metric: the diagonal
        curvature bounds of the features, step ``eta``); returns the updates and the objective
        before each step."""
        du, di = du.detach().clone(), di.detach().clone()
        values = []
        for _ in range(int(steps)):
            du.requires_grad_(True)
            di.requires_grad_(True)
            with torch.enable_grad():
                val = self.objective(data, du, di)
                gu, gi = torch.autograd.grad(val, [du, di])
            values.append(float(val.detach()))
            du = (du - eta * gu / data.feats_u.curv).detach()
            di = (di - eta * gi / data.feats_i.curv).detach()
        return du, di, values

    def embeddings(
        self, data: RequestData, du: torch.Tensor, di: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The unlearned final embeddings: updates applied, data-less users reset."""
        p, q = self.p0.clone(), self.q0.clone()
        p[data.users] += du.detach()
        q[data.items] += di.detach()
        p[data.reset] = self.reset_rows[data.reset]
        return p, q


def _segment_sum(index: torch.Tensor, src: torch.Tensor, n: int) -> torch.Tensor:
    """Row sums of ``src`` grouped by ``index`` into ``n`` rows (``scatter_add``, which CPU
    PyTorch vectorises over the columns, unlike ``index_add``)."""
    out = torch.zeros(n, src.shape[1], dtype=src.dtype)
    return out.scatter_add_(0, index[:, None].expand(-1, src.shape[1]), src)


@dataclass
class RowFeatures:
    """Per-row inputs of the encoder for one side (users or items)."""

    emb: torch.Tensor
    grad: torch.Tensor
    curv: torch.Tensor
    removed: torch.Tensor
    retained: torch.Tensor
    scalars: torch.Tensor

    @property
    def newton(self) -> torch.Tensor:
        """Diagonal-Newton step of the forget gradient."""
        return self.grad / self.curv


@dataclass
class RequestData:
    """One request's rows to update, their features and the restricted objective."""

    users: torch.Tensor
    items: torch.Tensor
    reset: torch.Tensor
    feats_u: RowFeatures
    feats_i: RowFeatures
    rel: torch.Tensor
    loss0: float
    g0u: torch.Tensor
    g0i: torch.Tensor
    n_forget: int


# ---------------------------------------------------------------------------- the encoder


class _SideEncoder(nn.Module):
    """MLP of one side: features -> update (``alpha * newton + scale * mlp``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        n_in = 6 * dim + N_SCALARS
        self.mlp = nn.Sequential(
            nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU()
        )
        self.delta = nn.Linear(hidden, dim)
        self.alpha = nn.Linear(hidden, 1)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)
        nn.init.zeros_(self.alpha.weight)
        nn.init.constant_(self.alpha.bias, math.log(1 / 3))  # alpha starts at 1/2
        # per-input-group scales (emb, grad, newton, removed, retained, curvature)
        self.register_buffer("scales", torch.ones(6))

    def groups(self, f: RowFeatures) -> list[torch.Tensor]:
        return [f.emb, f.grad, f.newton, f.removed, f.retained, f.curv]

    def fit_scales(self, feats: list[RowFeatures]) -> None:
        """Set the input scales to the RMS of each group over ``feats``."""
        with torch.no_grad():
            for k in range(6):
                xs = [self.groups(f)[k] for f in feats if f.emb.shape[0]]
                if xs:
                    rms = torch.cat(xs).pow(2).mean().sqrt()
                    self.scales[k] = rms.clamp_min(1e-12)

    def forward(self, f: RowFeatures) -> torch.Tensor:
        if f.emb.shape[0] == 0:
            return torch.zeros(0, f.emb.shape[1])
        g = self.groups(f)
        x = torch.cat([v / self.scales[k] for k, v in enumerate(g)] + [f.scalars], 1)
        h = self.mlp(x)
        alpha = 2.0 * torch.sigmoid(self.alpha(h))  # in (0, 2) x the diagonal-Newton step
        return alpha * f.newton + self.scales[2] * self.delta(h)


class InfluenceEncoder(nn.Module):
    """(request features, current embeddings) -> embedding update of the touched rows."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        self.user = _SideEncoder(dim, hidden)
        self.item = _SideEncoder(dim, hidden)

    def forward(self, data: RequestData) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user(data.feats_u), self.item(data.feats_i)


# ---------------------------------------------------------------------------- simulation


def simulate_removal(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    rng: np.random.Generator,
    kind: str | None = None,
    max_fraction: float = 0.1,
) -> tuple[str, np.ndarray]:
    """A simulated unlearning request over training pairs: ``(kind, removed bool mask)``.

    Kinds (uniform when ``kind`` is None), with a size drawn uniformly up to ``max_fraction``:
    ``users`` (whole histories of random users), ``interactions`` (random pairs),
    ``partial-users`` (random users lose a random share of their pairs), ``items`` (every pair
    of random items).
    """
    kind = kind or SIMULATION_KINDS[int(rng.integers(len(SIMULATION_KINDS)))]
    n = len(users)
    frac = float(rng.uniform(0.1, 1.0)) * max_fraction
    if kind == "users":
        pool = np.unique(users)
        pick = rng.choice(pool, max(1, int(round(frac * len(pool)))), replace=False)
        removed = np.isin(users, pick)
    elif kind == "interactions":
        removed = np.zeros(n, dtype=bool)
        removed[rng.choice(n, max(1, int(round(frac * n))), replace=False)] = True
    elif kind == "partial-users":
        pool = np.unique(users)
        pick = rng.choice(pool, max(1, int(round(2 * frac * len(pool)))), replace=False)
        share = np.zeros(n_users)
        share[pick] = rng.uniform(0.1, 0.9, len(pick))
        removed = rng.random(n) < share[users]
    elif kind == "items":
        pool = np.unique(items)
        pick = rng.choice(pool, max(1, int(round(0.5 * frac * len(pool)))), replace=False)
        removed = np.isin(items, pick)
    else:
        raise ValueError(f"unknown simulation kind {kind!r}; known: {', '.join(SIMULATION_KINDS)}")
    if removed.all():  # keep at least one pair
        removed[int(rng.integers(n))] = False
    if not removed.any():
        removed[int(rng.integers(n))] = True
    return kind, removed


# ---------------------------------------------------------------------------- the artifact


@dataclass
class EncoderArtifact:
    """A pre-trained influence encoder and what it was trained on."""

    encoder: InfluenceEncoder
    settings: dict
    model_name: str
    model_fingerprint: str
    data_hash: str
    ledger_version: int | None
    history: list[dict] = field(default_factory=list)
    pretrain_seconds: float = 0.0
    #: :meth:`ResidualProblem.state` of the model on its training pairs (precomputed statistics)
    problem_state: dict[str, torch.Tensor] | None = None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        payload = {
            "format": ARTIFACT_FORMAT,
            "kind": "unlearnrec-encoder",
            "dim": self.encoder.dim,
            "hidden": self.encoder.hidden,
            "state_dict": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "settings": dict(self.settings),
            "model_name": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "data_hash": self.data_hash,
            "ledger_version": self.ledger_version,
            "history": list(self.history),
            "pretrain_seconds": float(self.pretrain_seconds),
            "problem_state": self.problem_state,
        }
        atomic_save(path, lambda tmp: torch.save(payload, tmp))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EncoderArtifact:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("kind") != "unlearnrec-encoder":
            raise ValueError(f"{path}: not an UnlearnRec encoder artifact")
        if payload.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{path}: unsupported encoder format {payload.get('format')}")
        enc = InfluenceEncoder(payload["dim"], payload["hidden"])
        enc.load_state_dict(payload["state_dict"])
        return cls(
            enc,
            payload["settings"],
            payload["model_name"],
            payload["model_fingerprint"],
            payload["data_hash"],
            payload["ledger_version"],
            payload["history"],
            payload["pretrain_seconds"],
            payload.get("problem_state"),
        )


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("epoch-*.pt"))


def pretrain_encoder(
    model: CFModel,
    train: Pairs,
    ledger_version: int | None = None,
    checkpoint_dir: str | Path | None = None,
    requests: int = 32,
    epochs: int = 5,
    hidden: int = 128,
    lr: float = 3e-3,
    damping: float = 30.0,
    n_neg: int = 1,
    max_fraction: float = 0.1,
    valid_requests: int = 4,
    seed: int = 2020,
    resume: bool = True,
    log=None,
) -> EncoderArtifact:
    """Pre-train an influence encoder for ``model`` on simulated requests over ``train``.

    ``train`` are the model's training pairs, ``ledger_version`` the version of the data they
    come from (recorded in the artifact). With ``checkpoint_dir`` a checkpoint is written after
    every epoch and, with ``resume``, a run continues from the newest compatible one (same model,
    data and settings); the simulated requests are a pure function of ``seed``, so a resumed run
    ends where an uninterrupted one would. ``history`` records per epoch the mean objective
    ``J / n_forget`` on the training requests and on ``valid_requests`` held-out ones, together
    with the objective of the plain diagonal-Newton step on them (the encoder's starting point).
    """
    t_start = time.perf_counter()
    settings = dict(
        requests=int(requests),
        epochs=int(epochs),
        hidden=int(hidden),
        lr=float(lr),
        damping=float(damping),
        n_neg=int(n_neg),
        max_fraction=float(max_fraction),
        valid_requests=int(valid_requests),
        seed=int(seed),
    )
    fp = model_fingerprint(model)
    dh = pairs_hash(train)
    # a run is identified by everything but its length, so a longer run resumes a shorter one
    ident = sorted((k, v) for k, v in settings.items() if k != "epochs")
    key = hashlib.sha256(repr((fp, dh, ident)).encode()).hexdigest()[:16]
    problem = ResidualProblem(model, train, damping, n_neg, seed)
    rng = np.random.default_rng(seed)
    users, items = np.asarray(train[0]), np.asarray(train[1])
    pool = [
        problem.request(
            simulate_removal(users, items, model.n_users, model.n_items, rng, None, max_fraction)[1]
        )
        for _ in range(int(requests) + int(valid_requests))
    ]
    train_pool, valid_pool = pool[: int(requests)], pool[int(requests) :]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = InfluenceEncoder(problem.dim, hidden)
    encoder.user.fit_scales([d.feats_u for d in train_pool])
    encoder.item.fit_scales([d.feats_i for d in train_pool])
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    history: list[dict] = []
    start = 0
    elapsed_before = 0.0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None and resume:
        for ck in reversed(_checkpoints(folder)):
            state = torch.load(ck, map_location="cpu", weights_only=False)
            if state.get("key") == key and int(state["epoch"]) <= int(epochs):
                encoder.load_state_dict(state["encoder"])
                opt.load_state_dict(state["optimizer"])
                history = list(state["history"])
                start = int(state["epoch"])
                elapsed_before = float(state["seconds"])
                if log:
                    log(f"resuming UnlearnRec pre-training after epoch {start} ({ck.name})")
                break

    def mean_objective(data: list[RequestData], updates) -> float:
        with torch.no_grad():
            vals = [float(problem.objective(d, *updates(d))) / max(d.n_forget, 1) for d in data]
        return float(np.mean(vals)) if vals else float("nan")

    def refined(d: RequestData, steps: int, start=None) -> tuple[torch.Tensor, torch.Tensor]:
        du, di = start if start is not None else (d.feats_u.newton * 0, d.feats_i.newton * 0)
        return problem.refine(d, du, di, steps)[:2]

    # reference points on the held-out requests: the diagonal-Newton step and (10 refinement
    # steps from zero) the objective's optimum
    v_newton = mean_objective(valid_pool, lambda d: (d.feats_u.newton, d.feats_i.newton))
    v_opt = mean_objective(valid_pool, lambda d: refined(d, 10))

    for epoch in range(start, int(epochs)):
        order = np.random.default_rng([int(seed), epoch]).permutation(len(train_pool))
        losses = []
        encoder.train()
        for k in order:
            d = train_pool[int(k)]
            du, di = encoder(d)
            loss = problem.objective(d, du, di) / max(d.n_forget, 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        encoder.eval()
        v_enc = mean_objective(valid_pool, lambda d: encoder(d))
        v_ref = mean_objective(valid_pool, lambda d: refined(d, 1, encoder(d)))
        rec = {
            "epoch": epoch + 1,
            "train_objective": float(np.mean(losses)),
            "valid_objective": v_enc,
            "valid_objective_plus_1_step": v_ref,
            "valid_objective_newton": v_newton,
            "valid_objective_optimum": v_opt,
            "valid_optimality": v_enc / v_opt if v_opt < 0 else float("nan"),
            "seconds": elapsed_before + time.perf_counter() - t_start,
        }
        history.append(rec)
        if log:
            log(
                f"UnlearnRec pre-training epoch {epoch + 1}/{epochs}: J/n train "
                f"{rec['train_objective']:.4f}, valid {v_enc:.4f} (+1 step {v_ref:.4f}; "
                f"diag-Newton {v_newton:.4f}, optimum {v_opt:.4f})"
            )
        if folder is not None:
            state = {
                "key": key,
                "epoch": epoch + 1,
                "encoder": encoder.state_dict(),
                "optimizer": opt.state_dict(),
                "history": history,
                "seconds": rec["seconds"],
            }
            atomic_save(
                folder / f"epoch-{epoch + 1:04d}.pt", lambda tmp, st=state: torch.save(st, tmp)
            )
    encoder.eval()
    return EncoderArtifact(
        encoder,
        settings,
        model.model_name,
        fp,
        dh,
        ledger_version,
        history,
        pretrain_seconds=elapsed_before + time.perf_counter() - t_start,
        problem_state=problem.state(),
    )


# ---------------------------------------------------------------------------- the unlearner


def off_clock(monitor: Monitor, fn, *args: Any) -> tuple[Any, float]:
    """Run ``fn(*args)`` with the monitor's wall and CPU clocks paused; returns its result and
    its wall seconds."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    wall = time.perf_counter() - t
    monitor._paused += wall
    if hasattr(monitor, "_cpu_paused"):
        monitor._cpu_paused += time.process_time() - c
    return out, wall


@register_method
class UnlearnRec(Unlearner):
    """Influence-encoder unlearning (module docstring).

    ``encoder``: an :class:`EncoderArtifact` or the path of one; it must have been pre-trained
    for the model being unlearned (same fingerprint) unless ``strict=False``. When absent, an
    encoder is found in (or pre-trained into) ``cache_dir`` / the workspace's
    ``artifacts/unlearnrec`` folder, or pre-trained in memory; pre-training time is excluded from
    the record's ``seconds`` and reported as ``info["pretrain_seconds"]``.
    """

    name = "unlearnrec"
    handles = ("interactions", "user", "item")
    workspace_cache = "artifacts/unlearnrec"

    def __init__(
        self,
        encoder: EncoderArtifact | str | Path | None = None,
        finetune_steps: int = 2,
        finetune_eta: float = 0.5,
        pretrain_requests: int = 32,
        pretrain_epochs: int = 5,
        hidden: int = 128,
        damping: float = 30.0,
        n_neg: int = 1,
        empty_rows: str = "zero",
        cache_dir: str | Path | None = None,
        strict: bool = True,
        seed: int = 2020,
    ) -> None:
        self.encoder = encoder
        self.finetune_steps = finetune_steps
        self.finetune_eta = finetune_eta
        self.pretrain_requests = pretrain_requests
        self.pretrain_epochs = pretrain_epochs
        self.hidden = hidden
        self.damping = damping
        self.n_neg = n_neg
        self.empty_rows = empty_rows
        self.cache_dir = cache_dir
        self.strict = strict
        self.seed = seed
        self._workspace_dir: Path | None = None

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if isinstance(params["encoder"], EncoderArtifact):
            params["encoder"] = f"<encoder of {params['encoder'].model_fingerprint[:12]}>"
        elif params["encoder"] is not None:
            params["encoder"] = str(params["encoder"])
        if params["cache_dir"] is not None:
            params["cache_dir"] = str(params["cache_dir"])
        return params

    def unlearn(self, model, data, requests=None, callback=None):
        from llmrec.workspace import Workspace

        self._workspace_dir = (
            Path(self.workspace_defaults(data.root, model.model_name)["cache_dir"])
            if isinstance(data, Workspace)
            else None
        )
        return super().unlearn(model, data, requests, callback)

    # ------------------------------------------------------------------ encoder resolution
    def artifact_path(self, model: CFModel) -> Path | None:
        """Where the encoder of ``model`` is cached (None: in memory only)."""
        folder = Path(self.cache_dir) if self.cache_dir is not None else self._workspace_dir
        if folder is None:
            return None
        return folder / f"{model.model_name}-{model_fingerprint(model)[:16]}.pt"

    def resolve_encoder(self, model: CFModel, task: UnlearnTask) -> tuple[EncoderArtifact, bool]:
        """The encoder for ``model`` and whether it was pre-trained by this call."""
        enc = self.encoder
        if isinstance(enc, (str, Path)):
            enc = EncoderArtifact.load(enc)
        fp = model_fingerprint(model)
        if enc is not None:
            if self.strict and enc.model_fingerprint != fp:
                raise ValueError(
                    "the UnlearnRec encoder was pre-trained for another model "
                    f"(fingerprint {enc.model_fingerprint[:12]}, this model {fp[:12]}); "
                    "pre-train one for it or pass strict=False"
                )
            return enc, False
        path = self.artifact_path(model)
        if path is not None and path.is_file():  # pre-trained for this model and data: use it
            art = EncoderArtifact.load(path)
            if art.model_fingerprint == fp and art.data_hash == pairs_hash(task.train_before):
                return art, False
        art = pretrain_encoder(
            model,
            task.train_before,
            ledger_version=model.ledger_version,
            checkpoint_dir=None if path is None else path.with_suffix(".ckpt"),
            requests=self.pretrain_requests,
            epochs=self.pretrain_epochs,
            hidden=self.hidden,
            damping=self.damping,
            n_neg=self.n_neg,
            seed=self.seed,
        )
        if path is not None:
            art.save(path)
        return art, True

    # ------------------------------------------------------------------ the request
    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        # pre-training / loading the encoder is not part of the request's cost
        (art, pretrained), setup = off_clock(monitor, self.resolve_encoder, model, task)
        s = art.settings
        same = art.model_fingerprint == model_fingerprint(model)
        stored = art.problem_state is not None and same
        if stored and art.data_hash != pairs_hash(task.train_before):
            stored = False
        problem = ResidualProblem(
            model,
            task.train_before,
            s["damping"],
            s["n_neg"],
            s["seed"],
            self.empty_rows,
            state=art.problem_state if stored else None,
        )
        fkeys = task.forget[0].astype(np.int64) * model.n_items + task.forget[1]
        bkeys = task.train_before[0].astype(np.int64) * model.n_items + task.train_before[1]
        data = problem.request(np.isin(bkeys, fkeys))
        encoder = art.encoder
        encoder.eval()
        with torch.no_grad():
            du, di = encoder(data)
        du, di, values = problem.refine(data, du, di, self.finetune_steps, self.finetune_eta)
        n_f = max(data.n_forget, 1)
        for step, v in enumerate(values):
            monitor.report(model, iteration=step, objective=v / n_f)
        with torch.no_grad():
            j_final = float(problem.objective(data, du, di))
        p, q = problem.embeddings(data, du, di)
        new = clone(model, graph=task.train)
        info = assign_final(new, p, q)
        info.update(
            iterations=int(self.finetune_steps),
            pretrain_seconds=art.pretrain_seconds if pretrained else 0.0,
            encoder_pretrain_seconds=art.pretrain_seconds,
            encoder_setup_seconds=setup,
            encoder_pretrained_now=pretrained,
            encoder_ledger_version=art.ledger_version,
            encoder_fingerprint=art.model_fingerprint,
            statistics_from_artifact=stored,
            objective_encoder=values[0] / n_f if values else j_final / n_f,
            objective_final=j_final / n_f,
            updated_users=int(data.users.numel()),
            updated_items=int(data.items.numel()),
            reset_users=int(data.reset.numel()),
        )
        return new, info


# ---------------------------------------------------------------------------- command line


def configure_pretrain_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of the pre-training command (``--workspace``/``--seed`` come from the CLI)."""
    p.add_argument("--model", default="bpr", help="trained model name in the workspace")
    p.add_argument("--requests", type=int, default=32, help="simulated requests")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")


def cmd_pretrain(args: argparse.Namespace, ws=None) -> dict:
    """Pre-train (or resume) the encoder of the workspace's trained ``--model`` into
    ``artifacts/unlearnrec``; returns a summary with the artifact path. ``ws``: an open
    :class:`~llmrec.workspace.Workspace` (default: ``args.workspace`` opened)."""
    from llmrec.data.split import TRAIN
    from llmrec.models.training import load_checkpoint
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


def main(argv: list[str] | None = None) -> int:
    """``python -m llmrec.unlearning.unlearnrec``: pre-train (resumably) an encoder."""
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--workspace", default="llmrec-workspace")
    p.add_argument("--seed", type=int, default=2020)
    configure_pretrain_parser(p)
    out = cmd_pretrain(p.parse_args(argv))
    print(json.dumps({k: v for k, v in out.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
