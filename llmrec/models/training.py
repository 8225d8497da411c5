"""CF models on a workspace: training on the retained data of a ledger version, checkpoints.

Everything here reads the *retained view* of a ledger version, so "train at version v" is the
same as "retrain from scratch on the data that remains after the requests up to v".
"""

from __future__ import annotations

from llmrec.data.parts import RetainedData
from llmrec.data.retained import RetainedView
from llmrec.errors import ArtifactError
from llmrec.models.base import build_model, load_model
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
