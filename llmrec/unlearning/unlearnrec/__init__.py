"""UnlearnRec (Chen, Xia & Huang, "Pre-training for Recommendation Unlearning", SIGIR 2025): a
pre-trained *influence encoder* maps an unlearning request and the current embeddings to an
embedding update; at request time one forward pass plus a few fine-tuning steps.

One job per module:

* :mod:`~llmrec.unlearning.unlearnrec.problem`: the residual objective the encoder minimises,
  the per-request rows and features (:class:`ResidualProblem`);
* :mod:`~llmrec.unlearning.unlearnrec.encoder`: the encoder network (:class:`InfluenceEncoder`);
* :mod:`~llmrec.unlearning.unlearnrec.artifact`: a pre-trained encoder on disk
  (:class:`EncoderArtifact`);
* :mod:`~llmrec.unlearning.unlearnrec.pretrain`: simulated requests and resumable pre-training
  (:func:`pretrain_encoder`);
* :mod:`~llmrec.unlearning.unlearnrec.method`: the unlearner (:class:`UnlearnRec`).

``llmrec unlearnrec-pretrain --workspace W --model bpr`` pre-trains (or resumes) the encoder of
the workspace's trained model into ``W/artifacts/unlearnrec``, where ``UnlearnRec(cache_dir=...)``
and workspace runs find it.
"""

from llmrec.unlearning.unlearnrec.artifact import EncoderArtifact
from llmrec.unlearning.unlearnrec.encoder import InfluenceEncoder
from llmrec.unlearning.unlearnrec.method import UnlearnRec
from llmrec.unlearning.unlearnrec.pretrain import (
    SIMULATION_KINDS,
    pretrain_encoder,
    simulate_removal,
)
from llmrec.unlearning.unlearnrec.problem import RequestData, ResidualProblem, RowFeatures

__all__ = [
    "SIMULATION_KINDS",
    "EncoderArtifact",
    "InfluenceEncoder",
    "RequestData",
    "ResidualProblem",
    "RowFeatures",
    "UnlearnRec",
    "pretrain_encoder",
    "simulate_removal",
]
