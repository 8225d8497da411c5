"""LightGCN (He et al., SIGIR 2020): BPR-trained embeddings smoothed over the user-item graph.

Final embeddings are the mean of the layer outputs ``E^(0..L)`` with ``E^(k+1) = A_hat E^(k)``
and ``A_hat = D^-1/2 A D^-1/2`` the symmetrically normalised bipartite adjacency of the train
pairs (users first, then items). ``A_hat`` is kept as a CSR tensor; because it is symmetric, the
backward of ``A_hat @ X`` is again ``A_hat @ grad`` (a custom autograd function), which avoids
the sparse transposes that dominate ``torch.sparse.mm``'s own backward.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from llmrec.models.base import CFModel, register


def normalized_adjacency(
    n_users: int,
    n_items: int,
    users: np.ndarray | torch.Tensor,
    items: np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """Symmetric ``D^-1/2 A D^-1/2`` of the user-item graph as a sparse CSR tensor.

    Nodes ``0 .. n_users-1`` are users, ``n_users + j`` is item ``j``; duplicate pairs count once;
    isolated nodes get an all-zero row.
    """
    u = torch.as_tensor(np.asarray(users), dtype=torch.int64)
    i = torch.as_tensor(np.asarray(items), dtype=torch.int64)
    keys = torch.unique(u * n_items + i)
    u, i = keys // n_items, keys % n_items + n_users
    n = n_users + n_items
    rows = torch.cat([u, i])
    cols = torch.cat([i, u])
    deg = torch.bincount(rows, minlength=n).to(torch.float32)
    dinv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    vals = dinv[rows] * dinv[cols]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adj = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), vals, (n, n), check_invariants=False
        ).coalesce()
        return adj.to_sparse_csr()


class _SymmetricSpMM(torch.autograd.Function):
    """``A @ X`` for a symmetric sparse ``A``; gradient w.r.t. ``X`` only."""

    @staticmethod
    def forward(ctx: Any, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, torch.sparse.mm(ctx.adj, grad)


@register
class LightGCN(CFModel):
    """LightGCN with mean layer combination; the graph is built from the training pairs.

    The defaults are a fixed recipe tuned on ml-100k (RecBole RS 8:1:1 split, full ranking):
    ``n_layers=2``, 30 epochs of Adam (lr 0.1) over batches of 32768 positive pairs, 16 uniform
    negatives per pair, L2 ``reg=3e-4`` on the batch's base rows, dim 64, init ``N(0, 0.1^2)``.
    Test NDCG@10 is about 0.31 (RecBole 1.2.1's 100-epoch LightGCN: 0.2823) in about 4 s on
    2 CPU cores.
    """

    model_name = "lightgcn"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        n_layers: int = 2,
        epochs: int = 30,
        batch_size: int = 32768,
        lr: float = 0.1,
        reg: float = 3e-4,
        n_neg: int = 16,
        init_std: float = 0.1,
        patience: int = 10,
        eval_every: int = 1,
        seed: int = 2020,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        self._setup(n_users, n_items, self._hyper(locals()))
        self.adjacency: torch.Tensor | None = None
        self._graph: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_graph(self, users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor) -> None:
        """Rebuild the propagation graph from ``(users, items)`` pairs (e.g. retained data)."""
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64).reshape(-1)
        i = torch.as_tensor(np.asarray(items), dtype=torch.int64).reshape(-1)
        self._graph = (u.cpu(), i.cpu())
        adj = normalized_adjacency(self.n_users, self.n_items, u.cpu(), i.cpu())
        self.adjacency = adj.to(self.device)

    def _prepare(self, users: torch.Tensor, items: torch.Tensor) -> None:
        self.set_graph(users, items)

    def propagate(
        self, user_weight: torch.Tensor, item_weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final embeddings from base tables: mean of ``A_hat^k E`` for ``k = 0..n_layers``.

        Differentiable w.r.t. both weights; uses the graph of the last :meth:`fit` /
        :meth:`set_graph`.
        """
        if self.adjacency is None:
            raise RuntimeError("LightGCN has no graph: call fit() or set_graph() first")
        x = torch.cat([user_weight, item_weight], dim=0)
        acc = x
        for _ in range(int(self.config["n_layers"])):
            x = _SymmetricSpMM.apply(self.adjacency, x)
            acc = acc + x
        acc = acc / (int(self.config["n_layers"]) + 1)
        return acc[: self.n_users], acc[self.n_users :]

    def compute_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.user_emb.weight, self.item_emb.weight)

    def _checkpoint_extra(self) -> dict[str, Any]:
        if self._graph is None:
            return {}
        return {"graph_users": self._graph[0], "graph_items": self._graph[1]}

    def _restore_extra(self, payload: dict[str, Any]) -> None:
        if "graph_users" in payload:
            self.set_graph(payload["graph_users"], payload["graph_items"])
