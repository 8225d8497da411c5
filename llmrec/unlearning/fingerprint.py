"""Content hashes that key cached unlearning state: a trained model, a list of training pairs."""

from __future__ import annotations

import hashlib

import numpy as np

from llmrec.models import CFModel
from llmrec.unlearning.base import Pairs


def model_fingerprint(model: CFModel) -> str:
    """SHA-256 of a model's class, config and parameters (identifies the trained weights)."""
    h = hashlib.sha256(model.model_name.encode())
    h.update(repr(sorted((k, str(v)) for k, v in model.config.items())).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def pairs_hash(pairs: Pairs) -> str:
    """SHA-256 of ``(users, items)`` training pairs (order-sensitive, as int64)."""
    h = hashlib.sha256()
    for a in pairs:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()
