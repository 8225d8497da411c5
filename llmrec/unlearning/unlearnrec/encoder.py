"""UnlearnRec's influence encoder: (request features, current embeddings) -> embedding update.

**Encoder.** One MLP for user rows and one for item rows over per-row features: the current
embedding, the forget gradient ``g`` (the influence signal), the diagonal-Newton step
``g / (diag H_ret + damping)``, the mean embedding of the removed and of the retained
counterparts, the diagonal curvature and counts (log removed, log retained, removed share,
forgotten-negative occurrences). Output: ``alpha(x) * newton + scale * mlp(x)`` (``alpha``
starts at 1/2). Vector inputs are divided by scales measured on the pre-training requests.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmrec.unlearning.unlearnrec.problem import N_SCALARS, RequestData, RowFeatures


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
