"""The UnlearnRec unlearner: encoder forward pass plus a few refinement steps per request.

**Space.** The final (scoring) embeddings ``P`` (users) and ``Q`` (items), as in AltEraser: the
score is ``P Q^T`` for both BPR-MF and LightGCN, so the encoder is model-agnostic. The result is
written back into a clone of the input model (same class; LightGCN gets the retained graph and
base tables solved by :func:`llmrec.unlearning.embeddings.assign_final`).

**Request time** (:class:`UnlearnRec`): features of the real request, one forward pass of the
encoder, then ``finetune_steps`` fine-tuning steps on the predicted update: gradient steps on
this request's ``J`` (the pre-training objective, so the steps refine rather than fight the
prediction) preconditioned by the diagonal curvature bounds, step ``finetune_eta``; then the
data-less users' rows and the write-back. Pre-training (or loading) the encoder is excluded from
the record's clock and reported apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrec.models import CFModel
from llmrec.unlearning.base import (
    Monitor,
    Unlearner,
    UnlearnTask,
    clone,
)
from llmrec.unlearning.embeddings import assign_final
from llmrec.unlearning.fingerprint import model_fingerprint, pairs_hash
from llmrec.unlearning.registry import register_method
from llmrec.unlearning.unlearnrec.artifact import EncoderArtifact
from llmrec.unlearning.unlearnrec.pretrain import pretrain_encoder
from llmrec.unlearning.unlearnrec.problem import ResidualProblem


@register_method
class UnlearnRec(Unlearner):
    """Influence-encoder unlearning (module docstring).

    ``encoder``: an :class:`EncoderArtifact` or the path of one; it must have been pre-trained
    for the model being unlearned (same fingerprint) unless ``strict=False``. When absent, an
    encoder is found in (or pre-trained into) ``cache_dir`` / the workspace's
    ``artifacts/unlearnrec`` folder, or pre-trained in memory; pre-training time is excluded from
    the record's ``seconds`` and reported as ``info["pretrain_seconds"]``.
    """

    name = "unlearnrec"
    handles = ("interactions", "user", "item")
    workspace_cache = "artifacts/unlearnrec"

    def __init__(
        self,
        encoder: EncoderArtifact | str | Path | None = None,
        finetune_steps: int = 2,
        finetune_eta: float = 0.5,
        pretrain_requests: int = 32,
        pretrain_epochs: int = 5,
        hidden: int = 128,
        damping: float = 30.0,
        n_neg: int = 1,
        empty_rows: str = "zero",
        cache_dir: str | Path | None = None,
        strict: bool = True,
        seed: int = 2020,
    ) -> None:
        self.encoder = encoder
        self.finetune_steps = finetune_steps
        self.finetune_eta = finetune_eta
        self.pretrain_requests = pretrain_requests
        self.pretrain_epochs = pretrain_epochs
        self.hidden = hidden
        self.damping = damping
        self.n_neg = n_neg
        self.empty_rows = empty_rows
        self.cache_dir = cache_dir
        self.strict = strict
        self.seed = seed
        self._workspace_dir: Path | None = None

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if isinstance(params["encoder"], EncoderArtifact):
            params["encoder"] = f"<encoder of {params['encoder'].model_fingerprint[:12]}>"
        elif params["encoder"] is not None:
            params["encoder"] = str(params["encoder"])
        if params["cache_dir"] is not None:
            params["cache_dir"] = str(params["cache_dir"])
        return params

    def unlearn(self, model, data, requests=None, callback=None):
        from llmrec.workspace import Workspace

        self._workspace_dir = (
            Path(self.workspace_defaults(data.root, model.model_name)["cache_dir"])
            if isinstance(data, Workspace)
            else None
        )
        return super().unlearn(model, data, requests, callback)

    # ------------------------------------------------------------------ encoder resolution
    def artifact_path(self, model: CFModel) -> Path | None:
        """Where the encoder of ``model`` is cached (None: in memory only)."""
        folder = Path(self.cache_dir) if self.cache_dir is not None else self._workspace_dir
        if folder is None:
            return None
        return folder / f"{model.model_name}-{model_fingerprint(model)[:16]}.pt"

    def resolve_encoder(self, model: CFModel, task: UnlearnTask) -> tuple[EncoderArtifact, bool]:
        """The encoder for ``model`` and whether it was pre-trained by this call."""
        enc = self.encoder
        if isinstance(enc, (str, Path)):
            enc = EncoderArtifact.load(enc)
        fp = model_fingerprint(model)
        if enc is not None:
            if self.strict and enc.model_fingerprint != fp:
                raise ValueError(
                    "the UnlearnRec encoder was pre-trained for another model "
                    f"(fingerprint {enc.model_fingerprint[:12]}, this model {fp[:12]}); "
                    "pre-train one for it or pass strict=False"
                )
            return enc, False
        path = self.artifact_path(model)
        if path is not None and path.is_file():  # pre-trained for this model and data: use it
            art = EncoderArtifact.load(path)
            if art.model_fingerprint == fp and art.data_hash == pairs_hash(task.train_before):
                return art, False
        art = pretrain_encoder(
            model,
            task.train_before,
            ledger_version=model.ledger_version,
            checkpoint_dir=None if path is None else path.with_suffix(".ckpt"),
            requests=self.pretrain_requests,
            epochs=self.pretrain_epochs,
            hidden=self.hidden,
            damping=self.damping,
            n_neg=self.n_neg,
            seed=self.seed,
        )
        if path is not None:
            art.save(path)
        return art, True

    # ------------------------------------------------------------------ the request
    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        # pre-training / loading the encoder is not part of the request's cost
        (art, pretrained), setup = monitor.off_clock(self.resolve_encoder, model, task)
        s = art.settings
        same = art.model_fingerprint == model_fingerprint(model)
        stored = art.problem_state is not None and same
        if stored and art.data_hash != pairs_hash(task.train_before):
            stored = False
        problem = ResidualProblem(
            model,
            task.train_before,
            s["damping"],
            s["n_neg"],
            s["seed"],
            self.empty_rows,
            state=art.problem_state if stored else None,
        )
        fkeys = task.forget[0].astype(np.int64) * model.n_items + task.forget[1]
        bkeys = task.train_before[0].astype(np.int64) * model.n_items + task.train_before[1]
        data = problem.request(np.isin(bkeys, fkeys))
        encoder = art.encoder
        encoder.eval()
        with torch.no_grad():
            du, di = encoder(data)
        du, di, values = problem.refine(data, du, di, self.finetune_steps, self.finetune_eta)
        n_f = max(data.n_forget, 1)
        for step, v in enumerate(values):
            monitor.report(model, iteration=step, objective=v / n_f)
        with torch.no_grad():
            j_final = float(problem.objective(data, du, di))
        p, q = problem.embeddings(data, du, di)
        new = clone(model, graph=task.train)
        info = assign_final(new, p, q)
        info.update(
            iterations=int(self.finetune_steps),
            pretrain_seconds=art.pretrain_seconds if pretrained else 0.0,
            encoder_pretrain_seconds=art.pretrain_seconds,
            encoder_setup_seconds=setup,
            encoder_pretrained_now=pretrained,
            encoder_ledger_version=art.ledger_version,
            encoder_fingerprint=art.model_fingerprint,
            statistics_from_artifact=stored,
            objective_encoder=values[0] / n_f if values else j_final / n_f,
            objective_final=j_final / n_f,
            updated_users=int(data.users.numel()),
            updated_items=int(data.items.numel()),
            reset_users=int(data.reset.numel()),
        )
        return new, info
