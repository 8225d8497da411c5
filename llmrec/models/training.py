"""CF models on a workspace: training on the retained data of a ledger version, checkpoints.

Everything here reads the *retained view* of a ledger version, so "train at version v" is the
same as "retrain from scratch on the data that remains after the requests up to v".
"""

from __future__ import annotations

from llmrec.data.parts import RetainedData
from llmrec.data.retained import RetainedView
from llmrec.errors import ArtifactError
from llmrec.models.base import CFModel, build_model, load_model
from llmrec.workspace import Workspace


def retained_data(ws: Workspace, view: RetainedView | None = None) -> RetainedData:
    """Split the retained interactions of ``view`` (default: newest ledger version)."""
    return RetainedData.of(ws.view() if view is None else view, ws.split)


def train_model(
    ws: Workspace,
    name: str,
    seed: int = 2020,
    data: RetainedData | None = None,
    progress: bool = False,
    early_stop: bool = False,
    **overrides,
):
    """Train ``bpr`` or ``lightgcn`` from scratch on the retained train part."""
    data = retained_data(ws) if data is None else data
    ds = ws.dataset
    model = build_model(name, ds.n_users, ds.n_items, seed=seed, **overrides)
    model.fit(*data.train, valid=data.valid if early_stop else None, progress=progress)
    model.ledger_version = data.version
    return model


def checkpoint_path(ws: Workspace, name: str):
    """Where the workspace keeps the trained checkpoint of model ``name``."""
    return ws.artifact_path("models", f"{name}.pt")


def load_checkpoint(ws: Workspace, name: str):
    """The trained checkpoint of ``name`` in the workspace; ArtifactError if absent."""
    path = checkpoint_path(ws, name)
    if not path.is_file():
        raise ArtifactError(
            f"no trained {name} model in {ws.root}: run 'llmrec train --model {name}' first"
        )
    return load_model(path)


def hyper_parameters(model: CFModel) -> dict:
    """``model.config`` without the structural keys: what ``build_model`` takes as overrides."""
    return {k: v for k, v in model.config.items() if k not in ("model", "n_users", "n_items")}


def used_early_stopping(model: CFModel) -> bool:
    """Whether the model was trained with validation-based early stopping."""
    return any("valid_ndcg@10" in h for h in model.history)


def rebuild(model: CFModel, data: RetainedData) -> CFModel:
    """A fresh model with ``model``'s hyper-parameters and seed, trained from scratch on
    ``data`` (early-stopped on its valid part when ``model`` was): what ``llmrec train`` and
    ``retrain`` give, so what an exact checkpoint at ``data``'s version must equal bit for bit
    (seeded CPU training gives the same bytes at any torch thread count)."""
    fresh = build_model(model.model_name, model.n_users, model.n_items, **hyper_parameters(model))
    fresh.fit(*data.train, valid=data.valid if used_early_stopping(model) else None)
    fresh.ledger_version = data.version
    return fresh


def weight_differences(model: CFModel, reference: CFModel) -> list[str]:
    """Names of the tensors (state dict and stored extras, e.g. LightGCN's graph) whose bytes,
    shape or dtype differ between ``model`` and ``reference``; empty when identical."""
    import torch

    def tensors(m: CFModel) -> dict:
        out = {k: v.detach().cpu() for k, v in m.state_dict().items()}
        for k, v in m._checkpoint_extra().items():
            out[f"extra.{k}"] = torch.as_tensor(v).detach().cpu()
        return out

    mine, theirs = tensors(model), tensors(reference)
    differ = []
    for name in sorted(set(mine) | set(theirs)):
        a, b = mine.get(name), theirs.get(name)
        if (
            a is None
            or b is None
            or a.shape != b.shape
            or a.dtype != b.dtype
            or a.contiguous().numpy().tobytes() != b.contiguous().numpy().tobytes()
        ):
            differ.append(name)
    return differ
