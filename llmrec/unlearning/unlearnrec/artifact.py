"""A pre-trained UnlearnRec encoder on disk: the weights, what it was trained on (model
fingerprint, hash of the training pairs, ledger version) and the precomputed statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmrec.io import atomic_save
from llmrec.unlearning.unlearnrec.encoder import InfluenceEncoder

ARTIFACT_FORMAT = 1


@dataclass
class EncoderArtifact:
    """A pre-trained influence encoder and what it was trained on."""

    encoder: InfluenceEncoder
    settings: dict
    model_name: str
    model_fingerprint: str
    data_hash: str
    ledger_version: int | None
    history: list[dict] = field(default_factory=list)
    pretrain_seconds: float = 0.0
    #: :meth:`ResidualProblem.state` of the model on its training pairs (precomputed statistics)
    problem_state: dict[str, torch.Tensor] | None = None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        payload = {
            "format": ARTIFACT_FORMAT,
            "kind": "unlearnrec-encoder",
            "dim": self.encoder.dim,
            "hidden": self.encoder.hidden,
            "state_dict": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "settings": dict(self.settings),
            "model_name": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "data_hash": self.data_hash,
            "ledger_version": self.ledger_version,
            "history": list(self.history),
            "pretrain_seconds": float(self.pretrain_seconds),
            "problem_state": self.problem_state,
        }
        atomic_save(path, lambda tmp: torch.save(payload, tmp))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EncoderArtifact:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("kind") != "unlearnrec-encoder":
            raise ValueError(f"{path}: not an UnlearnRec encoder artifact")
        if payload.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{path}: unsupported encoder format {payload.get('format')}")
        enc = InfluenceEncoder(payload["dim"], payload["hidden"])
        enc.load_state_dict(payload["state_dict"])
        return cls(
            enc,
            payload["settings"],
            payload["model_name"],
            payload["model_fingerprint"],
            payload["data_hash"],
            payload["ledger_version"],
            payload["history"],
            payload["pretrain_seconds"],
            payload.get("problem_state"),
        )
