"""Collaborative-filtering base models (BPR-MF, LightGCN) on plain index arrays."""

from llmrec.models.base import MODEL_REGISTRY, CFModel, build_model, load_model
from llmrec.models.bpr import BPRMF
from llmrec.models.lightgcn import LightGCN, normalized_adjacency
from llmrec.models.sampling import NegativeSampler
from llmrec.models.training import checkpoint_path, retained_data, train_model

__all__ = [
    "BPRMF",
    "MODEL_REGISTRY",
    "CFModel",
    "LightGCN",
    "NegativeSampler",
    "build_model",
    "checkpoint_path",
    "load_model",
    "normalized_adjacency",
    "retained_data",
    "train_model",
]
