"""Reading a trained or unlearned checkpoint of either kind: a :class:`~llmrec.models.CFModel`
or a :class:`~llmrec.unlearning.sharded_model.ShardedModel`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmrec.errors import ArtifactError
from llmrec.models import CFModel, load_model
from llmrec.unlearning.sharded_model import ShardedModel, load_sharded


def load_any_model(path: str | Path, device: str | None = None) -> CFModel | ShardedModel:
    """A checkpoint of either kind: :meth:`CFModel.save` or :meth:`ShardedModel.save`.

    The file is untrusted: whatever makes it unreadable (missing, not a torch file, truncated,
    another format) is one :class:`ArtifactError` line naming it.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(payload, dict) and payload.get("class") == "ShardedModel":
            return load_sharded(path)
        return load_model(path, device=device)
    except Exception as exc:  # torch.load and the loaders may fail in any way on a bad file
        text = str(exc).strip()
        msg = text.splitlines()[0][:200] if text else type(exc).__name__
        raise ArtifactError(f"unreadable checkpoint {path}: {msg}") from None
