"""FineTune: warm start from the trained model, first-order AdamW on the retained data (the
first-order baseline of the AltEraser paper). LightGCN's graph is rebuilt on the retained pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from llmrec.models import CFModel, NegativeSampler
from llmrec.models.base import even_batches
from llmrec.unlearning.base import Monitor, Unlearner, UnlearnTask, clone
from llmrec.unlearning.registry import register_method


def bpr_epochs(
    model: CFModel,
    users: torch.Tensor,
    items: torch.Tensor,
    opt: torch.optim.Optimizer,
    sampler: NegativeSampler,
    gen: torch.Generator,
    batch_size: int,
    n_neg: int,
    extra_loss: Callable[[int], torch.Tensor] | None = None,
    after_step: Callable[[int], bool] | None = None,
) -> tuple[float, bool]:
    """One epoch of the model's BPR loss over ``(users, items)``.

    ``extra_loss(step)`` is added to every batch's loss (reverse BPR uses it); ``after_step(step)``
    returning True ends the epoch early. Returns the mean loss and whether it ended early.
    """
    n = users.numel()
    perm = torch.randperm(n, generator=gen)
    eu, ei = users[perm], items[perm]
    en = sampler.sample(eu, n_neg, gen)
    total = 0.0
    bounds = even_batches(n, batch_size)  # no runt last batch (see even_batches)
    for step, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        loss = model._batch_loss(eu[s:e], ei[s:e], en[s:e])
        if extra_loss is not None:
            loss = loss + extra_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = e
        total += float(loss.detach()) * (e - s)
        if after_step is not None and after_step(step):
            return total / max(done, 1), True
    return total / max(n, 1), False


@dataclass
class WarmStart:
    """What warm-started training on the retained pairs needs: a copy of the model (LightGCN on
    the retained graph), the pairs as tensors, their negative sampler, a seeded generator and
    AdamW over the copy."""

    model: CFModel
    users: torch.Tensor
    items: torch.Tensor
    sampler: NegativeSampler
    gen: torch.Generator
    opt: torch.optim.Optimizer

    @classmethod
    def of(
        cls, model: CFModel, task: UnlearnTask, lr: float, weight_decay: float, seed: int
    ) -> WarmStart:
        new = clone(model, graph=task.train)
        u = torch.as_tensor(task.train[0], dtype=torch.int64)
        i = torch.as_tensor(task.train[1], dtype=torch.int64)
        return cls(
            new,
            u,
            i,
            NegativeSampler(new.n_users, new.n_items, u, i),
            torch.Generator().manual_seed(int(seed)),
            torch.optim.AdamW(new.parameters(), lr=lr, weight_decay=weight_decay),
        )


@register_method
class FineTune(Unlearner):
    """Warm-started AdamW epochs on the retained training pairs."""

    name = "finetune"

    def __init__(
        self,
        epochs: int = 5,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int | None = None,
        n_neg: int | None = None,
        seed: int = 2020,
    ) -> None:
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_neg = n_neg
        self.seed = seed

    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        w = WarmStart.of(model, task, self.lr, self.weight_decay, self.seed)
        new = w.model
        bs = int(self.batch_size or new.config["batch_size"])
        n_neg = int(self.n_neg or new.config["n_neg"])
        new.train()
        for epoch in range(1, int(self.epochs) + 1):
            loss, _ = bpr_epochs(new, w.users, w.items, w.opt, w.sampler, w.gen, bs, n_neg)
            new.eval()
            monitor.report(new, iteration=epoch, loss=loss)
            new.train()
        return new, {"iterations": int(self.epochs)}
