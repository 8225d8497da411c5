"""The optimisation problem UnlearnRec's influence encoder is trained on (UnlearnRec, Chen, Xia &
Huang, SIGIR 2025; overview in :mod:`llmrec.unlearning.unlearnrec`).

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

The request-independent statistics (triples, their scores at the trained point, ``G0``, the
diagonal curvature, per-row sums of counterpart embeddings) are computed once by pre-training and
stored in the artifact, so a request only pays for its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from llmrec.models import CFModel
from llmrec.unlearning.base import (
    Pairs,
    initial_tables,
    sample_triples,
)
from llmrec.unlearning.embeddings import layers

#: count features per row (log removed, log retained, removed share, forgotten negatives, 1)
N_SCALARS = 5


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
