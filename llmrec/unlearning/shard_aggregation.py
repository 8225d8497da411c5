"""RecEraser's adaptive aggregation of a sharded model's sub-models.

Per side (users, items) every shard embedding is mapped by its own transfer matrix (``W_s e``,
initialised to the identity; no additive bias, so a user without data in any shard keeps no
preference, as in the base models) into a common space, and the aggregate is the
attention-weighted sum ``sum_s a_s h_s`` with ``a = softmax_s(v . tanh(A h_s + c))`` over the
shards holding the row; the score is the dot product of the aggregates. The aggregator is
trained with the BPR loss on all retained training pairs, the sub-models frozen. Simplifications
against the paper: a fixed number of epochs (no validation), uniform negatives, a plain
dot-product prediction layer, and the aggregator is retrained from its seeded initialisation
after every request (it is trained on every shard's data, so it must be; it is small and cheap),
which keeps the exactness: the aggregator after a request equals one trained from scratch on the
retained data over the same shards.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmrec.models import NegativeSampler
from llmrec.unlearning.base import Pairs


class _SideAttention(nn.Module):
    """Transfer matrices per shard plus attention over the shards, for one side."""

    def __init__(self, n_shards: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.transfer = nn.Parameter(torch.eye(dim).repeat(n_shards, 1, 1))
        self.att = nn.Linear(dim, hidden)
        self.att_out = nn.Linear(hidden, 1, bias=False)

    def forward(
        self, emb: torch.Tensor, member: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``emb``: ``[n, S, d]`` shard embeddings (``member``: ``[n, S]`` bool, the shards that
        hold the row) -> aggregate ``[n, d]`` and attention weights ``[n, S]``."""
        if member is not None and bool((member.sum(1) == 1).all()):
            # one shard per row (user partitions): the attention weight is 1 on it
            own = member.to(torch.int8).argmax(1)
            own_emb = emb[torch.arange(emb.shape[0]), own]
            h = torch.bmm(own_emb.unsqueeze(1), self.transfer[own]).squeeze(1)
            return h, member.to(emb.dtype)
        h = torch.einsum("nsd,sde->nse", emb, self.transfer)
        logits = self.att_out(torch.tanh(self.att(h))).squeeze(-1)
        if member is not None:
            logits = logits.masked_fill(~member, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return (weights.unsqueeze(-1) * h).sum(1), weights


class AttentionAggregator(nn.Module):
    """RecEraser's adaptive aggregation (module docstring) for users and items."""

    def __init__(self, n_shards: int, dim: int, hidden: int = 64, seed: int = 2020) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.user = _SideAttention(n_shards, dim, hidden)
            self.item = _SideAttention(n_shards, dim, hidden)

    def forward(
        self, users: torch.Tensor, items: torch.Tensor, member: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user(users, member)[0], self.item(items)[0]


def train_aggregator(
    agg: AttentionAggregator,
    users_emb: torch.Tensor,
    items_emb: torch.Tensor,
    train: Pairs,
    epochs: int,
    lr: float,
    batch_size: int,
    n_neg: int,
    reg: float,
    seed: int,
    member: torch.Tensor | None = None,
    dense_limit: int = 1 << 23,
) -> list[dict]:
    """BPR training of the aggregator on ``train`` with frozen shard embeddings ``[n, S, d]``
    (``member``: which shards hold each user, for user partitions)."""
    n_users, n_items = users_emb.shape[0], items_emb.shape[0]
    u = torch.as_tensor(np.asarray(train[0]), dtype=torch.int64)
    i = torch.as_tensor(np.asarray(train[1]), dtype=torch.int64)
    sampler = NegativeSampler(n_users, n_items, u, i)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(agg.parameters(), lr=lr)
    dense = n_users * n_items <= dense_limit
    history = []
    agg.train()
    for epoch in range(1, int(epochs) + 1):
        perm = torch.randperm(u.numel(), generator=gen)
        eu, ei = u[perm], i[perm]
        en = sampler.sample(eu, n_neg, gen)
        total = 0.0
        for s in range(0, u.numel(), batch_size):
            bu, bi, bn = eu[s : s + batch_size], ei[s : s + batch_size], en[s : s + batch_size]
            pu, qi = agg(users_emb, items_emb, member)
            if dense:  # one GEMM and 1-d gathers: far faster on CPU than row gathers
                flat = (pu @ qi.T).reshape(-1)
                pos = flat[bu * n_items + bi].unsqueeze(1)
                neg = flat[(bu.unsqueeze(1) * n_items + bn).reshape(-1)].view(bn.shape)
            else:
                pos = (pu[bu] * qi[bi]).sum(-1, keepdim=True)
                neg = (pu[bu].unsqueeze(1) * qi[bn]).sum(-1)
            loss = -F.logsigmoid(pos - neg).mean()
            if reg > 0:
                loss = loss + reg * sum(p.pow(2).sum() for p in agg.parameters())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * bu.numel()
        history.append({"epoch": epoch, "loss": total / max(u.numel(), 1)})
    agg.eval()
    return history
