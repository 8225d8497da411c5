"""Final (scoring) embeddings of a CF model, and writing them back into its base tables.

BPR-MF scores with its base tables, so writing final embeddings is a copy. LightGCN scores with
``S E`` where ``E`` stacks the base tables and ``S = mean_{k=0..L} A_hat^k`` is the layer-averaged
propagation over its graph. ``S`` is symmetric; for the default even ``L`` its eigenvalues
``mean_k lambda^k`` (``lambda`` in [-1, 1]) are at least 1/4 for ``L = 2``, so ``S`` is positive
definite and ``S E = F`` has one solution, found by conjugate gradients (one propagation per
iteration, all ``d`` columns at once, warm-started from the current tables). Rows of nodes
without edges decouple: their final embedding is ``E / (L + 1)``.
"""

from __future__ import annotations

import torch

from llmrec.models import CFModel


def layers(model: CFModel) -> int:
    """Number of propagation layers (0 for BPR-MF)."""
    return int(model.config.get("n_layers", 0)) if hasattr(model, "propagate") else 0


def propagation(model: CFModel, x: torch.Tensor) -> torch.Tensor:
    """``S x`` for stacked ``[users; items]`` rows ``x`` (identity for BPR-MF)."""
    if not hasattr(model, "propagate"):
        return x
    u, i = model.propagate(x[: model.n_users], x[model.n_users :])
    return torch.cat([u, i], dim=0)


def assign_final(
    model: CFModel,
    users: torch.Tensor,
    items: torch.Tensor,
    tol: float = 1e-5,
    max_iter: int = 200,
) -> dict:
    """Set ``model``'s base tables so that its final embeddings equal ``(users, items)``.

    Uses the model's current graph (set the retained graph first). CG starts from the target
    itself, never from the current tables: an iterative solve keeps a small residual in the
    direction of its start, and the old tables are exactly what must not survive. Rows of nodes
    without edges are set exactly (``(L + 1) x``). Returns CG statistics.
    """
    target = torch.cat([users, items], dim=0).to(torch.float32)
    if not hasattr(model, "propagate"):
        with torch.no_grad():
            model.user_emb.weight.copy_(users)
            model.item_emb.weight.copy_(items)
        return {"cg_iterations": 0, "cg_residual": 0.0}
    with torch.no_grad():
        adj = model.adjacency
        isolated = (adj.crow_indices()[1:] - adj.crow_indices()[:-1]) == 0
        x = target.clone()
        r = target - propagation(model, x)
        p = r.clone()
        rs = (r * r).sum(0)
        norm = target.norm().clamp_min(1e-30)
        it = 0
        while it < max_iter and float(r.norm() / norm) > tol:
            sp = propagation(model, p)
            alpha = rs / (p * sp).sum(0).clamp_min(1e-30)
            x += alpha * p
            r -= alpha * sp
            rs_new = (r * r).sum(0)
            p = r + (rs_new / rs.clamp_min(1e-30)) * p
            rs = rs_new
            it += 1
        x[isolated] = target[isolated] * (layers(model) + 1)
        model.user_emb.weight.copy_(x[: model.n_users])
        model.item_emb.weight.copy_(x[model.n_users :])
    return {"cg_iterations": it, "cg_residual": float(r.norm() / norm)}
