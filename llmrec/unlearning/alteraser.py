"""AltEraser (Liu et al., "Forgetting Fast in Recommender Systems", 2022): unlearning by
alternating second-order block optimisation, warm-started from the trained model.

**Variables.** The final (scoring) embeddings ``P`` (users) and ``Q`` (items), so that the loss
is exactly the base model's loss. For BPR-MF these are the base tables. For LightGCN the
forgotten edges are removed from the graph and the graph is re-normalised; AltEraser works on the
final embeddings (LightGCN scores are ``P Q^T``) and at the end the base tables are solved from
``S E = [P; Q]`` with ``S`` the layer-averaged propagation of the *retained* graph
(:mod:`llmrec.unlearning.embeddings`), so the returned LightGCN, propagating over the retained
graph, outputs exactly the unlearned embeddings. (Differentiating the raw base tables through
the propagation would couple every row with its two-hop neighbourhood and lose the small
independent problems.)

**Objective.** The base models' own loss: BPR on the retained training pairs with a fixed set of
``n_neg`` sampled negatives per pair (seeded), ``L_ret(P, Q) = sum_(u,i,j) softplus(-p_u.(q_i -
q_j))``. A model trained for a fixed budget (or early-stopped) is not a stationary point of its
loss, so optimising ``L_ret`` as is would also keep training (and over-fit) the part the request
did not touch. With ``objective="residual"`` (default) the blocks minimise

    J(P, Q) = L_ret(P, Q) - <G0, (P, Q)> + (damping / 2) ||(P, Q) - (P0, Q0)||^2,

``G0 = grad L_full(P0, Q0)`` (retained + forgotten triples at the trained embeddings). The trained
model is a stationary point of the same construction on the full data (a minimiser once the
proximal ``damping`` dominates the coupling of ``P`` and ``Q``), and ``grad J(P0, Q0) =
-grad L_forget(P0, Q0)``: the update is driven by the forgotten data alone (the influence-function
view of unlearning, iterated to the fixed point). ``objective="retained"`` drops the ``G0`` term.
User rows left without any retained pair are not optimised: ``empty_rows="zero"`` (default)
sets them to the minimiser of their objective without data, 0 (constant scores: nothing about
the user is left); ``"init"`` to the value retraining leaves them at, the seeded initialisation
(divided by ``L + 1`` for LightGCN). Rows whose gradient norm is below ``grad_tol`` times the
largest row gradient of the forgotten triples are left as they are.

**Blocks.** With ``Q`` fixed, ``J`` separates over users: row ``u`` is a logistic-regression-like
problem with gradient ``sum_t -sigmoid(-z_t) d_t - g0_u + damping (p - p0_u)`` and exact d×d
Hessian ``sum_t sigmoid(z_t) sigmoid(-z_t) d_t d_t^T + damping I`` (``d_t = q_i - q_j``), solved by
batched Newton steps (one Cholesky solve per row) with a per-row backtracking line search. With
``P`` fixed, each BPR term couples its positive and negative item; since every term involves two
rows, its Hessian ``w (a; -a)(a; -a)^T`` is bounded by ``2 w diag(a a^T, a a^T)``, so the step with
each item's own doubled d×d Hessian is a majorise-minimise step: every item row is again an
independent d×d system, all solved in one batch, followed by a block line search. The loss
only sees item differences, so a shift shared by all items is invisible to it: after each step
that shift is set exactly (a closed form from the proximal and linear terms), which row-wise
steps alone would approach only slowly.

**Cost.** With ``hessian_cap`` a row's Hessian uses at most that many of its triples (evenly
spread, rescaled: sub-sampled Newton) and is inverted through the Woodbury identity (a
cap×cap Cholesky per row); unless ``refresh_hessian`` the factors of a block are computed once
and reused (fixed-metric quasi-Newton); the line searches keep every step a descent step.

**Stopping (consistency).** After every sweep (user block + item block) the top-``topk`` lists of
the users are compared with the previous sweep's; the run stops when their mean overlap reaches
``consistency`` (the recommendations no longer change) or after ``max_sweeps``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmrec.models import CFModel
from llmrec.unlearning.base import (
    Monitor,
    Unlearner,
    UnlearnTask,
    clone,
    initial_tables,
    sample_triples,
)
from llmrec.unlearning.embeddings import assign_final, layers
from llmrec.unlearning.registry import register_method


def _segments(seg: torch.Tensor, n_segments: int, cap: int | None):
    """Group entries by segment, keeping at most ``cap`` per segment (evenly spread, so the
    choice is deterministic). Returns ``(entries, segment, slot, weight, width)``: kept entry
    indices, their segment and slot within it, the weight ``count / kept`` that keeps the
    segment's sum unbiased, and the number of slots."""
    keys = seg.numpy()
    if n_segments < 2**15:  # NumPy's stable sort of 16-bit integers is a radix sort
        keys = keys.astype(np.int16)
    order = torch.as_tensor(np.argsort(keys, kind="stable"))
    seg_s = seg[order]
    counts = torch.bincount(seg_s, minlength=n_segments)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(seg.numel()) - start[seg_s]
    n = counts[seg_s]
    limit = int(counts.max()) if counts.numel() else 0
    if cap is not None:
        limit = min(limit, int(cap))
    kept = n.clamp(max=limit)
    keep = (rank * kept) % n.clamp_min(1) < kept
    slot = (rank * kept) // n.clamp_min(1)  # 0 .. kept-1, distinct within a segment
    return (
        order[keep],
        seg_s[keep],
        slot[keep],
        (n / kept.clamp_min(1)).float()[keep],
        max(limit, 1),
    )


class RowSystems:
    """Independent damped Gram systems, one per row: ``(damping I + V_r^T V_r) x_r = g_r``.

    ``V_r`` stacks the row's (weighted) vectors: at most ``width`` of them (see
    :func:`_segments`). When ``width < d`` the d×d system is solved through the Woodbury
    identity, ``x = (g - V^T (damping I + V V^T)^-1 V g) / damping``, i.e. one width×width
    Cholesky per row instead of a d×d one; otherwise the d×d Hessians are formed and factored.
    Either way the solve is exact for the row's Hessian, and all rows are batched.
    """

    def __init__(self, seg: torch.Tensor, n_rows: int, cap: int | None, damping: float) -> None:
        self.n_rows = int(n_rows)
        self.entries, self.seg, self.slot, self.weight, self.width = _segments(seg, n_rows, cap)
        self.damping = float(damping)
        self.v: torch.Tensor | None = None
        self.chol: torch.Tensor | None = None

    def factor(self, vec: torch.Tensor, d: int) -> None:
        """Factor the systems; ``vec`` holds one vector per kept entry (already weighted)."""
        v = torch.zeros(self.n_rows, self.width, d, dtype=vec.dtype)
        v[self.seg, self.slot] = vec
        eye = torch.eye(min(self.width, d), dtype=vec.dtype)
        if self.width < d:
            k = torch.bmm(v, v.transpose(1, 2)) + self.damping * eye
            self.v = v
        else:
            k = torch.bmm(v.transpose(1, 2), v) + self.damping * eye
            self.v = None
        chol, info = torch.linalg.cholesky_ex(k)
        if int(info.max()) != 0:  # numerically indefinite rows: a little more damping
            chol = torch.linalg.cholesky(k + 1e-3 * max(self.damping, 1.0) * eye)
        self.chol = chol

    def solve(self, g: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Solutions of every row's system, zero outside ``rows`` (right-hand sides ``g``)."""
        rhs = g.unsqueeze(-1)
        if self.v is None:
            x = torch.cholesky_solve(rhs, self.chol).squeeze(-1)
        else:
            vg = (self.v * g.unsqueeze(1)).sum(-1, keepdim=True)  # batched mat-vec
            y = torch.cholesky_solve(vg, self.chol)
            x = (g - (self.v * y).sum(1)) / self.damping
        mask = torch.zeros(x.shape[0], 1, dtype=torch.bool)
        mask[rows] = True
        return x.masked_fill_(~mask, 0.0)


class _Problem:
    """The AltEraser objective on fixed triples (module docstring).

    Scores of the triples come from one dense ``P Q^T`` when the user × item matrix is small
    (``dense_limit`` cells; gathers otherwise, also the cheaper choice for a few triples such as
    the forget set); gradients likewise from ``C Q`` and ``C^T P`` with
    ``C`` the per-cell loss derivatives. Row Hessians are Gram matrices over each row's triples
    (:class:`RowSystems`); with ``hessian_cap`` a row uses at most that many of its triples
    (evenly spread, rescaled: a sub-sampled Newton step), and unless ``refresh`` they are
    factored at the first visit of a block and reused (a fixed-metric quasi-Newton step; each step
    is followed by a line search, so descent does not depend on the Hessian being current). Rows
    whose gradient norm is at most ``grad_tol`` are left as they are.
    """

    def __init__(
        self,
        tri: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        n_users: int,
        n_items: int,
        p0: torch.Tensor,
        q0: torch.Tensor,
        damping: float,
        free_users: torch.Tensor,
        hessian_cap: int | None = None,
        refresh: bool = True,
        dense_limit: int = 1 << 26,
        hessian: bool = True,
    ) -> None:
        self.u, self.i, self.j = tri
        self.n_users, self.n_items = n_users, n_items
        self.p0, self.q0 = p0, q0
        self.g0u, self.g0i = torch.zeros_like(p0), torch.zeros_like(q0)
        self.damping = float(damping)
        self.free = free_users
        self.refresh = refresh
        self.grad_tol = 0.0
        self.active: dict[str, int] = {}
        self.dense = n_users * n_items <= dense_limit
        self.ki = self.u * n_items + self.i
        self.kj = self.u * n_items + self.j
        self._memo: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._buffers: dict[str, torch.Tensor] = {}
        self._scores_of: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fresh: dict[str, bool] = {}
        if hessian:
            self.user_sys = RowSystems(self.u, n_users, hessian_cap, damping)
            self.item_sys = RowSystems(torch.cat([self.i, self.j]), n_items, hessian_cap, damping)

    # ------------------------------------------------------------------ values and gradients
    def z(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Score differences of the triples (memoised for the last few ``(P, Q)`` pairs)."""
        for pp, qq, zz in self._memo:
            if pp is p and qq is q:
                return zz
        if self.dense:
            s = torch.mm(p, q.T, out=self._buffer("scores", p.dtype))
            self._scores_of = (p, q)
            flat = s.view(-1)
            z = flat[self.ki] - flat[self.kj]
        else:
            z = (p[self.u] * (q[self.i] - q[self.j])).sum(1)
        self._memo = [(p, q, z), *self._memo[:3]]
        return z

    def scores(self, p: torch.Tensor, q: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """``P[users] Q^T``, read from the dense buffer when it holds exactly these factors."""
        held = self._scores_of
        if self.dense and held is not None and held[0] is p and held[1] is q:
            return self._buffers["scores"][users]
        return p[users] @ q.T

    def _buffer(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A reused dense user × item buffer (fresh multi-MB allocations cost page faults on
        every call)."""
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype:
            buf = self._buffers[name] = torch.empty(self.n_users, self.n_items, dtype=dtype)
        return buf

    def _coef_grads(
        self, c: torch.Tensor, p: torch.Tensor, q: torch.Tensor, side: str = "both"
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Gradients of ``sum_t f(z_t)`` w.r.t. ``P`` and/or ``Q`` (``side``: "user", "item",
        "both") given ``c_t = f'(z_t)``."""
        want_p, want_q = side in ("user", "both"), side in ("item", "both")
        if self.dense:
            cm = self._buffer("coef", p.dtype).zero_()
            cm.view(-1).index_add_(0, self.ki, c).index_add_(0, self.kj, -c)
            return (cm @ q if want_p else None), (cm.T @ p if want_q else None)
        gp = gq = None
        if want_p:
            gp = torch.zeros_like(p).index_add_(0, self.u, c[:, None] * (q[self.i] - q[self.j]))
        if want_q:
            cu = c[:, None] * p[self.u]
            gq = torch.zeros_like(q).index_add_(0, self.i, cu).index_add_(0, self.j, -cu)
        return gp, gq

    def loss_gradients(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the plain BPR sum over the triples."""
        return self._coef_grads(-torch.sigmoid(-self.z(p, q)), p, q)

    def gradient(
        self, p: torch.Tensor, q: torch.Tensor, block: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grad J w.r.t. the block's rows, z)`` for ``block`` "user" or "item"."""
        z = self.z(p, q)
        gp, gq = self._coef_grads(-torch.sigmoid(-z), p, q, block)
        if block == "user":
            return gp - self.g0u + self.damping * (p - self.p0), z
        return gq - self.g0i + self.damping * (q - self.q0), z

    def user_values(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Per-user value of ``J`` with ``Q`` fixed."""
        loss = torch.zeros(self.n_users, dtype=p.dtype).index_add_(
            0, self.u, F.softplus(-self.z(p, q))
        )
        return loss - (self.g0u * p).sum(1) + 0.5 * self.damping * (p - self.p0).pow(2).sum(1)

    def objective(self, p: torch.Tensor, q: torch.Tensor) -> float:
        f = self.free
        return float(
            F.softplus(-self.z(p, q)).sum()
            - (self.g0u[f] * p[f]).sum()
            - (self.g0i * q).sum()
            + 0.5 * self.damping * ((p - self.p0)[f].pow(2).sum() + (q - self.q0).pow(2).sum())
        )

    # ------------------------------------------------------------------ Hessians
    def _systems(self, block: str, p: torch.Tensor, q: torch.Tensor, z: torch.Tensor) -> RowSystems:
        sys_ = self.user_sys if block == "user" else self.item_sys
        if self._fresh.get(block) and not self.refresh:
            return sys_
        w = torch.sigmoid(z) * torch.sigmoid(-z)
        n = self.u.numel()
        t = sys_.entries % n  # item rows list the positive entries, then the negative ones
        scale = (w[t] * sys_.weight).sqrt()[:, None]
        if block == "user":
            vec = (q[self.i[t]] - q[self.j[t]]) * scale
        else:  # the pairwise loss couples two item rows: Hessian bound 2 diag(a a^T)
            vec = p[self.u[t]] * (scale * 2**0.5)
        sys_.factor(vec, p.shape[1])
        self._fresh[block] = True
        return sys_

    # ------------------------------------------------------------------ block steps
    def user_step(self, p: torch.Tensor, q: torch.Tensor, backtracks: int = 4) -> torch.Tensor:
        """One batched Newton step on every active user row, with per-row backtracking."""
        gp, z = self.gradient(p, q, "user")
        rows = self.free[gp[self.free].norm(dim=1) > self.grad_tol]
        self.active["user"] = int(rows.numel())
        if rows.numel() == 0:
            return p
        step = self._systems("user", p, q, z).solve(gp, rows)
        f0 = self.user_values(p, q)
        alpha = torch.ones(self.n_users, dtype=p.dtype)
        new = p - step
        for k in range(backtracks + 1):
            worse = self.user_values(new, q) > f0 + 1e-6 * f0.abs()
            if not bool(worse.any()):
                return new
            alpha = torch.where(worse, alpha * 0.5, alpha)
            if k == backtracks:  # rows still not improving keep their value
                alpha = torch.where(worse, torch.zeros_like(alpha), alpha)
            new = p - alpha[:, None] * step
        return new

    def item_step(self, p: torch.Tensor, q: torch.Tensor, backtracks: int = 6) -> torch.Tensor:
        """One batched majorise-minimise Newton step on every active item row, then a block line
        search."""
        gq, z = self.gradient(p, q, "item")
        rows = torch.nonzero(gq.norm(dim=1) > self.grad_tol).squeeze(1)
        self.active["item"] = int(rows.numel())
        if rows.numel() == 0:
            return q
        step = self._systems("item", p, q, z).solve(gq, rows)
        f0 = self.objective(p, q)
        alpha = 1.0
        for _ in range(backtracks + 1):
            new = self._recentre(q - alpha * step)
            if self.objective(p, new) <= f0:
                return new
            alpha *= 0.5
        return q

    def _recentre(self, q: torch.Tensor) -> torch.Tensor:
        """Exact minimisation over a shift shared by all item rows. The pairwise loss only sees
        item differences, so along this direction ``J`` is the quadratic proximal/linear part
        alone; row-wise steps barely move it (their Hessians are dominated by the loss)."""
        shift = (self.q0 - q + self.g0i / self.damping).mean(0) if self.damping > 0 else 0.0
        return q + shift


def _topk(prob: _Problem, p: torch.Tensor, q: torch.Tensor, users: torch.Tensor, k: int):
    return torch.topk(prob.scores(p, q, users), k, dim=1).indices


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    k = a.shape[1]
    same = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum(1).double() / k
    return float(same.mean())


@register_method
class AltEraser(Unlearner):
    """Alternating batched-Newton unlearning (module docstring)."""

    name = "alteraser"

    def __init__(
        self,
        objective: str = "residual",
        damping: float = 30.0,
        n_neg: int = 1,
        max_sweeps: int = 10,
        consistency: float = 0.98,
        topk: int = 10,
        max_check_users: int = 4096,
        grad_tol: float = 1e-3,
        hessian_cap: int | None = 32,
        refresh_hessian: bool = False,
        empty_rows: str = "zero",
        seed: int = 2020,
    ) -> None:
        if not damping > 0:
            raise ValueError(f"damping must be positive, got {damping!r}")
        if empty_rows not in ("zero", "init"):
            raise ValueError(f"empty_rows must be 'zero' or 'init', got {empty_rows!r}")
        if objective not in ("residual", "retained"):
            raise ValueError(f"objective must be 'residual' or 'retained', got {objective!r}")
        self.objective = objective
        self.damping = damping
        self.n_neg = n_neg
        self.max_sweeps = max_sweeps
        self.consistency = consistency
        self.topk = topk
        self.max_check_users = max_check_users
        self.grad_tol = grad_tol
        self.hessian_cap = hessian_cap
        self.refresh_hessian = refresh_hessian
        self.empty_rows = empty_rows
        self.seed = seed

    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        ds = task.dataset
        n_users, n_items = model.n_users, model.n_items
        p0, q0 = (t.detach().cpu().to(torch.float32).clone() for t in model.final_embeddings())
        empty = torch.as_tensor(task.users_without_data)
        free = torch.nonzero(~empty).squeeze(1)

        ret = sample_triples(*task.train, n_users, n_items, self.n_neg, self.seed)
        fgt = sample_triples(
            *task.forget, n_users, n_items, self.n_neg, self.seed + 1, known=task.train_before
        )
        prob = _Problem(
            ret,
            n_users,
            n_items,
            p0,
            q0,
            self.damping,
            free,
            hessian_cap=self.hessian_cap,
            refresh=self.refresh_hessian,
        )
        # gradient of the forgotten triples at the trained point: the unlearning signal
        gfu, gfi = _Problem(
            fgt, n_users, n_items, p0, q0, 0.0, free, hessian=False, dense_limit=0
        ).loss_gradients(p0, q0)
        if self.objective == "residual":
            gru, gri = prob.loss_gradients(p0, q0)
            prob.g0u, prob.g0i = gru + gfu, gri + gfi
        scale = max(
            float(gfu[free].norm(dim=1).max()) if free.numel() else 0.0,
            float(gfi.norm(dim=1).max()),
        )
        prob.grad_tol = self.grad_tol * scale

        p = p0.clone()
        if self.empty_rows == "init":
            init_u, _ = initial_tables(model)
            p[empty] = init_u[empty] / (layers(model) + 1)
        else:
            p[empty] = 0.0
        q = q0.clone()

        rng = np.random.default_rng(self.seed)
        check = free.numpy()
        if len(check) > self.max_check_users:
            check = np.sort(rng.choice(check, self.max_check_users, replace=False))
        check_t = torch.as_tensor(check)
        k = min(self.topk, n_items)
        prev = _topk(prob, p, q, check_t, k)
        converged = False
        sweeps = 0
        for sweeps in range(1, self.max_sweeps + 1):
            p = prob.user_step(p, q)
            q = prob.item_step(p, q)
            cur = _topk(prob, p, q, check_t, k)
            agree = _overlap(prev, cur)
            prev = cur
            new_model = None
            if monitor.callback is not None:
                new_model = self._write(model, task, p, q)[0]
            monitor.report(
                new_model if new_model is not None else model,
                iteration=sweeps,
                topk_consistency=agree,
                active_users=prob.active.get("user", 0),
                active_items=prob.active.get("item", 0),
            )
            if agree >= self.consistency:
                converged = True
                break
        new, info = self._write(model, task, p, q)
        info.update(
            iterations=sweeps,
            converged=converged,
            reset_users=int(empty.sum()),
            triples=int(ret[0].numel()),
            dataset=ds.name,
        )
        return new, info

    @staticmethod
    def _write(
        model: CFModel, task: UnlearnTask, p: torch.Tensor, q: torch.Tensor
    ) -> tuple[CFModel, dict]:
        new = clone(model, graph=task.train)
        return new, assign_final(new, p, q)
