"""Vectorised uniform negative sampling for implicit-feedback training.

A negative for user ``u`` is an item drawn uniformly from the items ``u`` has *not* interacted with
in the training pairs. Sampling is rejection re-sampling done for whole batches at once: draw every
slot uniformly over all items, look the ``(user, item)`` keys up in a sorted key array
(``torch.searchsorted``; a dense bool matrix when ``n_users * n_items`` is small, which is
several times faster), and re-draw only the slots that hit a positive. All randomness comes
from an explicit ``torch.Generator``, so the same seed gives the same negatives.
"""

from __future__ import annotations

import numpy as np
import torch


def pair_keys(users: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    """Encode ``(user, item)`` pairs as one int64 key ``user * n_items + item``."""
    return users.to(torch.int64) * n_items + items.to(torch.int64)


class NegativeSampler:
    """Uniform sampler over each user's non-interacted items.

    Args:
        n_users: number of users (ids ``0 .. n_users-1``).
        n_items: number of items (ids ``0 .. n_items-1``).
        users, items: training pairs (internal indices); duplicates are allowed.
        device: device the key array (and the sampled tensors) live on.
        max_rounds: bound on re-sampling rounds; slots still colliding after that many rounds
            (only possible for users who interacted with (nearly) every item) keep their last draw.
        dense_limit: use a dense ``n_users * n_items`` bool lookup table up to this many cells.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        users: np.ndarray | torch.Tensor,
        items: np.ndarray | torch.Tensor,
        device: str | torch.device = "cpu",
        max_rounds: int = 100,
        dense_limit: int = 1 << 26,
    ) -> None:
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.device = torch.device(device)
        self.max_rounds = int(max_rounds)
        u = torch.as_tensor(np.asarray(users), dtype=torch.int64)
        i = torch.as_tensor(np.asarray(items), dtype=torch.int64)
        self.keys = torch.unique(pair_keys(u, i, self.n_items)).to(self.device)  # sorted
        self.table: torch.Tensor | None = None
        if self.n_users * self.n_items <= dense_limit:
            self.table = torch.zeros(
                self.n_users * self.n_items, dtype=torch.bool, device=self.device
            )
            self.table[self.keys] = True

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool tensor: whether each ``(user, item)`` pair is a training positive."""
        keys = pair_keys(users, items, self.n_items)
        if self.table is not None:
            return self.table[keys]
        if self.keys.numel() == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        return self.keys[pos] == keys

    def sample(
        self, users: torch.Tensor, n_neg: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n_neg`` negatives per entry of ``users``; returns int64 ``[len(users), n_neg]``."""
        users = users.to(self.device, torch.int64)
        shape = (users.numel(), int(n_neg))
        neg = torch.randint(
            self.n_items, shape, generator=generator, device=self.device, dtype=torch.int64
        )
        flat = neg.view(-1)
        rows = users.repeat_interleave(shape[1])
        idx = torch.nonzero(self.is_positive(rows, flat)).squeeze(1)
        for _ in range(self.max_rounds):
            if idx.numel() == 0:
                break
            redraw = torch.randint(
                self.n_items, (idx.numel(),), generator=generator, device=self.device
            )
            flat[idx] = redraw
            idx = idx[self.is_positive(rows[idx], redraw)]
        return neg
