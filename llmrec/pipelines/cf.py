"""CF models on a workspace: retained training data, training, RecBole-protocol evaluation.

Everything here reads the *retained view* of a ledger version, so "train at version v" is the
same as "retrain from scratch on the data that remains after the requests up to v".
"""

from __future__ import annotations

import numpy as np

from llmrec.data.retained import RetainedView
from llmrec.data.retained_pairs import RetainedData
from llmrec.errors import ArtifactError
from llmrec.evaluation import evaluate_ranking
from llmrec.models import build_model, load_model
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


def evaluate_model(
    model,
    data: RetainedData,
    part: str = "test",
    users: np.ndarray | None = None,
    ks=(5, 10, 20),
    return_per_user: bool = False,
    score_fn=None,
) -> dict:
    """RecBole full ranking on the retained ``part`` ("test" or "valid").

    Test masks retained train + valid items (RecBole's behaviour), valid masks train items.
    Forgotten items are never ranked; forgotten users are not evaluated.
    """
    if part == "test":
        tu, ti = data.test
        mu = np.concatenate([data.train[0], data.valid[0]])
        mi = np.concatenate([data.train[1], data.valid[1]])
    elif part == "valid":
        tu, ti = data.valid
        mu, mi = data.train
    else:
        raise ValueError(f"part must be 'test' or 'valid', got {part!r}")
    alive = np.flatnonzero(~data.view.forgotten_users)
    users = alive if users is None else np.intersect1d(np.asarray(users, dtype=np.int64), alive)
    return evaluate_ranking(
        score_fn or model.score,
        data.view.dataset.n_items,
        mu,
        mi,
        tu,
        ti,
        ks=ks,
        users=users,
        return_per_user=return_per_user,
        exclude_items=data.view.forgotten_items if data.view.forgotten_items.any() else None,
    )


def checkpoint_path(ws: Workspace, name: str):
    return ws.artifact_path("models", f"{name}.pt")


def load_checkpoint(ws: Workspace, name: str):
    """The trained checkpoint of ``name`` in the workspace; ArtifactError if absent."""
    path = checkpoint_path(ws, name)
    if not path.is_file():
        raise ArtifactError(
            f"no trained {name} model in {ws.root}: run 'llmrec train --model {name}' first"
        )
    return load_model(path)
