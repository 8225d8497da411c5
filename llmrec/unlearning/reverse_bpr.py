"""MMRecUn-style reverse BPR: warm-started fine-tuning whose loss is the usual BPR on the
retained pairs plus a *reverse* BPR on the forget set, ``-log sigmoid(s_uj - s_ui)`` for a
forgotten pair ``(u, i)`` and a sampled item ``j`` the user never had: forgotten positives are
pushed below unseen items.

Every epoch is one pass over the retained pairs (the model's batch size and negatives); each
step also takes an equal share of the forget set, so one epoch sees it once, and every
(forgotten pair, negative) term weighs ``forget_weight`` times a retained (pair, negative) term
of the batch mean (a per-batch mean of the forget terms would weigh a forget set of 5% of the
pairs twenty-fold and wreck the item embeddings everyone shares). After every step
the *win rate* of the forgotten pairs (how often a forgotten item still outscores a fresh unseen
item of the same user) is measured; the run stops once it is at most ``target_win_rate``
(default 0.5: the model no longer prefers forgotten items to random unseen ones, as a model
that never saw them would not) or after ``epochs``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmrec.models import CFModel, NegativeSampler
from llmrec.unlearning.base import Monitor, UnlearnTask
from llmrec.unlearning.finetune import FineTune, WarmStart, bpr_epochs
from llmrec.unlearning.registry import register_method


def win_rate(
    model: CFModel,
    users: torch.Tensor,
    items: torch.Tensor,
    sampler: NegativeSampler,
    gen: torch.Generator,
    n_neg: int = 8,
) -> float:
    """Fraction of (forgotten pair, unseen item) comparisons the forgotten item wins (ties
    count half); the same ``gen`` seed gives the same unseen items, so checks are comparable."""
    with torch.no_grad():
        u_all, i_all = model.final_embeddings()
        neg = sampler.sample(users, n_neg, gen)
        s_pos = (u_all[users] * i_all[items]).sum(-1, keepdim=True)
        s_neg = torch.einsum("bd,bnd->bn", u_all[users], i_all[neg])
        return float((s_pos > s_neg).float().mean() + 0.5 * (s_pos == s_neg).float().mean())


@register_method
class ReverseBPR(FineTune):
    """Fine-tune with BPR on the retained data and reverse BPR on the forget set."""

    name = "reverse-bpr"

    def __init__(
        self,
        epochs: int = 20,
        lr: float = 1e-2,
        forget_weight: float = 0.3,
        target_win_rate: float = 0.5,
        weight_decay: float = 0.0,
        batch_size: int = 8192,
        n_neg: int | None = None,
        seed: int = 2020,
    ) -> None:
        super().__init__(epochs, lr, weight_decay, batch_size, n_neg, seed)
        self.forget_weight = forget_weight
        self.target_win_rate = target_win_rate

    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        w = WarmStart.of(model, task, self.lr, self.weight_decay, self.seed)
        new, u, i, gen = w.model, w.users, w.items, w.gen
        fu = torch.as_tensor(task.forget[0], dtype=torch.int64)
        fi = torch.as_tensor(task.forget[1], dtype=torch.int64)
        # unseen items for the reverse term: neither retained nor forgotten for that user
        seen = NegativeSampler(new.n_users, new.n_items, *task.train_before)
        bs = int(self.batch_size)
        n_neg = int(self.n_neg or new.config["n_neg"])
        steps = max(1, math.ceil(u.numel() / bs))
        fbs = max(1, math.ceil(fu.numel() / steps))
        state: dict = {}

        def reverse(step: int) -> torch.Tensor:
            if step == 0:
                perm = torch.randperm(fu.numel(), generator=gen)
                state["u"], state["i"] = fu[perm], fi[perm]
                state["j"] = seen.sample(state["u"], n_neg, gen)
            sl = slice(step * fbs, (step + 1) * fbs)
            bu, bi, bj = state["u"][sl], state["i"][sl], state["j"][sl]
            if bu.numel() == 0:
                return torch.zeros(())
            u_all, i_all = new.compute_embeddings()
            eu = u_all[bu]
            s_pos = (eu * i_all[bi]).sum(-1, keepdim=True)
            s_neg = torch.einsum("bd,bnd->bn", eu, i_all[bj])
            # per (pair, negative) the same weight as a retained term of the BPR batch mean
            return self.forget_weight * -F.logsigmoid(s_neg - s_pos).sum() / (bs * n_neg)

        def rate() -> float:
            return win_rate(new, fu, fi, seen, torch.Generator().manual_seed(self.seed + 1))

        state["wr"] = rate()
        state["steps"] = 0

        def check(step: int) -> bool:
            state["steps"] += 1
            state["wr"] = rate()
            return state["wr"] <= self.target_win_rate

        converged = state["wr"] <= self.target_win_rate
        epoch = 0
        while not converged and epoch < int(self.epochs):
            epoch += 1
            new.train()
            loss, converged = bpr_epochs(
                new, u, i, w.opt, w.sampler, gen, bs, n_neg, extra_loss=reverse, after_step=check
            )
            new.eval()
            monitor.report(new, iteration=epoch, loss=loss, forget_win_rate=state["wr"])
        return new, {
            "iterations": epoch,
            "steps": state["steps"],
            "converged": converged,
            "forget_win_rate": state["wr"],
        }
