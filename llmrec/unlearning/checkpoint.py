"""Reading a trained or unlearned checkpoint of either kind: a :class:`~llmrec.models.CFModel`
or a :class:`~llmrec.unlearning.sharded_model.ShardedModel`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmrec.models import CFModel, load_model
from llmrec.unlearning.sharded_model import ShardedModel, load_sharded


def load_any_model(path: str | Path, device: str | None = None) -> CFModel | ShardedModel:
    """A checkpoint of either kind: :meth:`CFModel.save` or :meth:`ShardedModel.save`."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("class") == "ShardedModel":
        return load_sharded(path)
    return load_model(path, device=device)
