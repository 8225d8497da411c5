"""Pre-training UnlearnRec's influence encoder on simulated requests (resumable).

**Pre-training** (:func:`pretrain_encoder`, separate and resumable): ``requests`` simulated
removals drawn from the model's training pairs (a mixture, each with a random size: random users'
whole histories, random interactions, random users losing part of their history, random items'
interactions), ``epochs`` passes with Adam over the per-request objective ``J / n_forget``; after
every epoch a checkpoint (encoder, optimiser, history) is written atomically, and a run resumes
from the last one. The result is an :class:`EncoderArtifact` recording the ledger version of the
data it was trained on, the model fingerprint and a hash of the training pairs.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from llmrec.io import atomic_save
from llmrec.models import CFModel
from llmrec.unlearning.base import (
    Pairs,
)
from llmrec.unlearning.fingerprint import model_fingerprint, pairs_hash
from llmrec.unlearning.unlearnrec.artifact import EncoderArtifact
from llmrec.unlearning.unlearnrec.encoder import InfluenceEncoder
from llmrec.unlearning.unlearnrec.problem import RequestData, ResidualProblem

#: simulated request kinds of the pre-training mixture
SIMULATION_KINDS = ("users", "interactions", "partial-users", "items")


def simulate_removal(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    rng: np.random.Generator,
    kind: str | None = None,
    max_fraction: float = 0.1,
) -> tuple[str, np.ndarray]:
    """A simulated unlearning request over training pairs: ``(kind, removed bool mask)``.

    Kinds (uniform when ``kind`` is None), with a size drawn uniformly up to ``max_fraction``:
    ``users`` (whole histories of random users), ``interactions`` (random pairs),
    ``partial-users`` (random users lose a random share of their pairs), ``items`` (every pair
    of random items).
    """
    kind = kind or SIMULATION_KINDS[int(rng.integers(len(SIMULATION_KINDS)))]
    n = len(users)
    frac = float(rng.uniform(0.1, 1.0)) * max_fraction
    if kind == "users":
        pool = np.unique(users)
        pick = rng.choice(pool, max(1, int(round(frac * len(pool)))), replace=False)
        removed = np.isin(users, pick)
    elif kind == "interactions":
        removed = np.zeros(n, dtype=bool)
        removed[rng.choice(n, max(1, int(round(frac * n))), replace=False)] = True
    elif kind == "partial-users":
        pool = np.unique(users)
        pick = rng.choice(pool, max(1, int(round(2 * frac * len(pool)))), replace=False)
        share = np.zeros(n_users)
        share[pick] = rng.uniform(0.1, 0.9, len(pick))
        removed = rng.random(n) < share[users]
    elif kind == "items":
        pool = np.unique(items)
        pick = rng.choice(pool, max(1, int(round(0.5 * frac * len(pool)))), replace=False)
        removed = np.isin(items, pick)
    else:
        raise ValueError(f"unknown simulation kind {kind!r}; known: {', '.join(SIMULATION_KINDS)}")
    if removed.all():  # keep at least one pair
        removed[int(rng.integers(n))] = False
    if not removed.any():
        removed[int(rng.integers(n))] = True
    return kind, removed


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("epoch-*.pt"))


def pretrain_encoder(
    model: CFModel,
    train: Pairs,
    ledger_version: int | None = None,
    checkpoint_dir: str | Path | None = None,
    requests: int = 32,
    epochs: int = 5,
    hidden: int = 128,
    lr: float = 3e-3,
    damping: float = 30.0,
    n_neg: int = 1,
    max_fraction: float = 0.1,
    valid_requests: int = 4,
    seed: int = 2020,
    resume: bool = True,
    log=None,
) -> EncoderArtifact:
    """Pre-train an influence encoder for ``model`` on simulated requests over ``train``.

    ``train`` are the model's training pairs, ``ledger_version`` the version of the data they
    come from (recorded in the artifact). With ``checkpoint_dir`` a checkpoint is written after
    every epoch and, with ``resume``, a run continues from the newest compatible one (same model,
    data and settings); the simulated requests are a pure function of ``seed``, so a resumed run
    ends where an uninterrupted one would. ``history`` records per epoch the mean objective
    ``J / n_forget`` on the training requests and on ``valid_requests`` held-out ones, together
    with the objective of the plain diagonal-Newton step on them (the encoder's starting point).
    """
    t_start = time.perf_counter()
    settings = dict(
        requests=int(requests),
        epochs=int(epochs),
        hidden=int(hidden),
        lr=float(lr),
        damping=float(damping),
        n_neg=int(n_neg),
        max_fraction=float(max_fraction),
        valid_requests=int(valid_requests),
        seed=int(seed),
    )
    fp = model_fingerprint(model)
    dh = pairs_hash(train)
    # a run is identified by everything but its length, so a longer run resumes a shorter one
    ident = sorted((k, v) for k, v in settings.items() if k != "epochs")
    key = hashlib.sha256(repr((fp, dh, ident)).encode()).hexdigest()[:16]
    problem = ResidualProblem(model, train, damping, n_neg, seed)
    rng = np.random.default_rng(seed)
    users, items = np.asarray(train[0]), np.asarray(train[1])
    pool = [
        problem.request(
            simulate_removal(users, items, model.n_users, model.n_items, rng, None, max_fraction)[1]
        )
        for _ in range(int(requests) + int(valid_requests))
    ]
    train_pool, valid_pool = pool[: int(requests)], pool[int(requests) :]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = InfluenceEncoder(problem.dim, hidden)
    encoder.user.fit_scales([d.feats_u for d in train_pool])
    encoder.item.fit_scales([d.feats_i for d in train_pool])
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    history: list[dict] = []
    start = 0
    elapsed_before = 0.0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None and resume:
        for ck in reversed(_checkpoints(folder)):
            state = torch.load(ck, map_location="cpu", weights_only=False)
            if state.get("key") == key and int(state["epoch"]) <= int(epochs):
                encoder.load_state_dict(state["encoder"])
                opt.load_state_dict(state["optimizer"])
                history = list(state["history"])
                start = int(state["epoch"])
                elapsed_before = float(state["seconds"])
                if log:
                    log(f"resuming UnlearnRec pre-training after epoch {start} ({ck.name})")
                break

    def mean_objective(data: list[RequestData], updates) -> float:
        with torch.no_grad():
            vals = [float(problem.objective(d, *updates(d))) / max(d.n_forget, 1) for d in data]
        return float(np.mean(vals)) if vals else float("nan")

    def refined(d: RequestData, steps: int, start=None) -> tuple[torch.Tensor, torch.Tensor]:
        du, di = start if start is not None else (d.feats_u.newton * 0, d.feats_i.newton * 0)
        return problem.refine(d, du, di, steps)[:2]

    # reference points on the held-out requests: the diagonal-Newton step and (10 refinement
    # steps from zero) the objective's optimum
    v_newton = mean_objective(valid_pool, lambda d: (d.feats_u.newton, d.feats_i.newton))
    v_opt = mean_objective(valid_pool, lambda d: refined(d, 10))

    for epoch in range(start, int(epochs)):
        order = np.random.default_rng([int(seed), epoch]).permutation(len(train_pool))
        losses = []
        encoder.train()
        for k in order:
            d = train_pool[int(k)]
            du, di = encoder(d)
            loss = problem.objective(d, du, di) / max(d.n_forget, 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        encoder.eval()
        v_enc = mean_objective(valid_pool, lambda d: encoder(d))
        v_ref = mean_objective(valid_pool, lambda d: refined(d, 1, encoder(d)))
        rec = {
            "epoch": epoch + 1,
            "train_objective": float(np.mean(losses)),
            "valid_objective": v_enc,
            "valid_objective_plus_1_step": v_ref,
            "valid_objective_newton": v_newton,
            "valid_objective_optimum": v_opt,
            "valid_optimality": v_enc / v_opt if v_opt < 0 else float("nan"),
            "seconds": elapsed_before + time.perf_counter() - t_start,
        }
        history.append(rec)
        if log:
            log(
                f"UnlearnRec pre-training epoch {epoch + 1}/{epochs}: J/n train "
                f"{rec['train_objective']:.4f}, valid {v_enc:.4f} (+1 step {v_ref:.4f}; "
                f"diag-Newton {v_newton:.4f}, optimum {v_opt:.4f})"
            )
        if folder is not None:
            state = {
                "key": key,
                "epoch": epoch + 1,
                "encoder": encoder.state_dict(),
                "optimizer": opt.state_dict(),
                "history": history,
                "seconds": rec["seconds"],
            }
            atomic_save(
                folder / f"epoch-{epoch + 1:04d}.pt", lambda tmp, st=state: torch.save(st, tmp)
            )
    encoder.eval()
    return EncoderArtifact(
        encoder,
        settings,
        model.model_name,
        fp,
        dh,
        ledger_version,
        history,
        pretrain_seconds=elapsed_before + time.perf_counter() - t_start,
        problem_state=problem.state(),
    )
