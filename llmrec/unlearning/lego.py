"""LEGO (Yu et al., ACM MM 2025): multi-attribute unlearning by per-attribute embedding
calibration and a flexible combination.

**Calibration** (one per attribute ``t``, run in parallel processes). Starting from the trained
user embeddings ``U_0`` (the final, scoring embeddings), alternate

1. fit a variational posterior ``q_phi(a | u)`` (an MLP over standardised embeddings, or
   softmax-linear with ``q_hidden=0``) by maximum likelihood on ``(U_t, A_t)`` — a few Adam
   steps per round, warm-started (``q_warmup`` steps before the first round);
2. take a gradient step on ``U_t`` that lowers the CLUB upper bound of ``I(U_t; A_t)``,
   ``mean_i log q(a_i | u_i) - mean_{i,j} log q(a_j | u_i)``; the mean over all (shuffled)
   pairs is computed exactly, ``mean_i sum_c pi_c log q(c | u_i)`` with ``pi`` the label
   frequencies;
3. project every row back into the ball ``||u_i - u0_i|| <= epsilon ||u0_i||`` (utility).

Only the rows of the users the request names move (all users by default).

**Combination.** ``U(alpha) = sum_t softmax(alpha)_t U_t`` over the requested attributes, with
``alpha`` minimising the summed CLUB estimates (each ``q_t`` re-fitted on ``U(alpha)`` as alpha
moves). Calibrations are cached by (embeddings, labels, rows, settings) in memory and, with
``cache_dir``, on disk: adding or withdrawing an attribute request whose calibration is cached
re-solves only ``alpha``.

For LightGCN the calibrated matrix replaces the final user embeddings while the final item
embeddings are kept (the base tables are solved from the propagation, see
:mod:`llmrec.unlearning.embeddings`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmrec.audit.attributes import attribute_labels
from llmrec.errors import LlmrecError
from llmrec.models import CFModel
from llmrec.unlearning.base import Monitor, Unlearner, UnlearnTask, clone
from llmrec.unlearning.embeddings import assign_final


def _posterior(d: int, n_classes: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(d, n_classes)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


class _Attribute:
    """Labels of one attribute as tensors: labelled users, their class, class frequencies."""

    def __init__(self, labels: np.ndarray) -> None:
        known = np.flatnonzero(labels >= 0)
        self.index = torch.as_tensor(known)
        self.y = torch.as_tensor(labels[known])
        self.n_classes = int(self.y.max()) + 1
        counts = torch.bincount(self.y, minlength=self.n_classes).float()
        self.prior = counts / counts.sum()

    def club(self, q: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """CLUB estimate on standardised embeddings ``x`` (all users)."""
        logp = F.log_softmax(q(x[self.index]), dim=1)
        pos = logp.gather(1, self.y[:, None]).mean()
        return pos - (logp * self.prior).sum(1).mean()

    def fit(self, q: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, steps: int) -> None:
        """Maximum-likelihood steps of ``q`` on the labelled rows of ``x`` (detached)."""
        xs = x[self.index].detach()
        for _ in range(steps):
            loss = F.cross_entropy(q(xs), self.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def calibrate(u0: np.ndarray, labels: np.ndarray, rows: np.ndarray, settings: dict) -> dict:
    """Calibrate ``u0`` against one attribute (module docstring); process-pool friendly.

    Returns the calibrated matrix, the CLUB trajectory, the posterior's state and the seconds.
    """
    with _threads(int(settings.get("threads", 1))):
        return _calibrate(u0, labels, rows, settings)


@contextmanager
def _threads(n: int):
    """Run with ``n`` torch threads (small, latency-bound ops are fastest single-threaded)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _calibrate(u0: np.ndarray, labels: np.ndarray, rows: np.ndarray, settings: dict) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(int(settings["seed"]))
    base = torch.as_tensor(u0, dtype=torch.float32)
    mu, sd = base.mean(0), base.std(0).clamp_min(1e-8)
    attr = _Attribute(labels)
    q = _posterior(base.shape[1], attr.n_classes, int(settings["q_hidden"]))
    opt = torch.optim.Adam(
        q.parameters(), lr=float(settings["q_lr"]), weight_decay=float(settings["q_weight_decay"])
    )
    movable = torch.as_tensor(rows, dtype=torch.bool)[:, None]
    radius = float(settings["epsilon"]) * base.norm(dim=1, keepdim=True)
    step = float(settings["step"]) * len(attr.index)
    u = base.clone()
    trace = []
    attr.fit(q, opt, (u - mu) / sd, int(settings["q_warmup"]))
    for _ in range(int(settings["iterations"])):
        attr.fit(q, opt, (u - mu) / sd, int(settings["q_steps"]))
        ur = u.clone().requires_grad_(True)
        bound = attr.club(q, (ur - mu) / sd)
        (grad,) = torch.autograd.grad(bound, ur)
        trace.append(float(bound.detach()))
        with torch.no_grad():
            u = torch.where(movable, u - step * grad * sd.pow(2), u)
            delta = u - base
            scale = (radius / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            u = base + delta * scale
    return {
        "users": u.numpy(),
        "club": trace,
        "q_state": {k: v.clone() for k, v in q.state_dict().items()},
        "seconds": time.perf_counter() - t0,
    }


class CalibrationCache:
    """Calibrations by key, in memory and (optionally) as files in ``folder``."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        if key in self.memory:
            return self.memory[key]
        if self.folder is not None and (self.folder / f"{key}.pt").is_file():
            value = torch.load(self.folder / f"{key}.pt", weights_only=False)
            self.memory[key] = value
            return value
        return None

    def put(self, key: str, value: dict) -> None:
        self.memory[key] = value
        if self.folder is not None:
            from llmrec.io import atomic_save

            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_save(self.folder / f"{key}.pt", lambda p: torch.save(value, p))


def _key(u0: np.ndarray, labels: np.ndarray, rows: np.ndarray, settings: dict) -> str:
    h = hashlib.sha256()
    for arr in (np.ascontiguousarray(u0, dtype=np.float32), labels.astype(np.int64), rows):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:24]


class LEGO(Unlearner):
    """Per-attribute CLUB calibration + softmax combination (module docstring)."""

    name = "lego"
    handles = ("attribute",)

    def __init__(
        self,
        epsilon: float = 0.3,
        iterations: int = 150,
        step: float = 0.01,
        q_hidden: int = 0,
        q_lr: float = 0.01,
        q_weight_decay: float = 1e-3,
        q_steps: int = 5,
        q_warmup: int = 200,
        combine_iterations: int = 40,
        combine_lr: float = 0.2,
        combine_q_steps: int = 3,
        workers: int = 2,
        min_class_size: int = 50,
        cache_dir: str | None = None,
        seed: int = 2020,
    ) -> None:
        self.epsilon = epsilon
        self.iterations = iterations
        self.step = step
        self.q_hidden = q_hidden
        self.q_lr = q_lr
        self.q_weight_decay = q_weight_decay
        self.q_steps = q_steps
        self.q_warmup = q_warmup
        self.combine_iterations = combine_iterations
        self.combine_lr = combine_lr
        self.combine_q_steps = combine_q_steps
        self.workers = workers
        self.min_class_size = min_class_size
        self.cache_dir = cache_dir
        self.seed = seed
        self.cache = CalibrationCache(cache_dir)

    def _settings(self) -> dict:
        keys = (
            "epsilon",
            "iterations",
            "step",
            "q_hidden",
            "q_lr",
            "q_weight_decay",
            "q_steps",
            "q_warmup",
            "seed",
        )
        return {k: getattr(self, k) for k in keys}

    # ------------------------------------------------------------------ calibrations
    def calibrations(
        self, u0: np.ndarray, labels: dict[str, np.ndarray], rows: dict[str, np.ndarray]
    ) -> tuple[dict[str, dict], dict]:
        """Calibrations of ``u0`` for every attribute in ``labels`` (cached ones reused, the
        missing ones computed in parallel processes). Returns them and timing/cache info."""
        settings = self._settings()
        keys = {a: _key(u0, labels[a], rows[a], settings) for a in labels}
        out, missing = {}, []
        for a, k in keys.items():
            hit = self.cache.get(k)
            if hit is None:
                missing.append(a)
            else:
                out[a] = hit
        t0 = time.perf_counter()
        mode = "in-process"
        done: dict[str, dict] = {}
        if len(missing) > 1 and self.workers > 1:
            # spawned processes (no shared OpenMP state); a script that starts them must guard
            # its entry point with ``if __name__ == "__main__"`` -- without it the pool breaks
            # and the calibrations run here instead
            ctx = multiprocessing.get_context("spawn")
            try:
                with ProcessPoolExecutor(min(self.workers, len(missing)), mp_context=ctx) as pool:
                    futures = {
                        a: pool.submit(calibrate, u0, labels[a], rows[a], settings) for a in missing
                    }
                    done = {a: f.result() for a, f in futures.items()}
                mode = "processes"
            except BrokenProcessPool:
                done = {}
        if len(done) < len(missing):
            mode = "in-process"
            done = {a: calibrate(u0, labels[a], rows[a], settings) for a in missing}
        for a, value in done.items():
            self.cache.put(keys[a], value)
            out[a] = value
        info = {
            "calibrated": missing,
            "calibration_mode": mode if missing else "cached",
            "cached": [a for a in labels if a not in missing],
            "calibration_seconds": time.perf_counter() - t0,
        }
        return out, info

    # ------------------------------------------------------------------ combination
    def combine(
        self, u0: np.ndarray, cals: dict[str, dict], labels: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict]:
        """Solve ``alpha`` (module docstring); returns ``U(alpha)`` and the weights/estimates."""
        names = list(cals)
        stack = torch.stack([torch.as_tensor(cals[a]["users"]) for a in names])
        base = torch.as_tensor(u0, dtype=torch.float32)
        mu, sd = base.mean(0), base.std(0).clamp_min(1e-8)
        attrs = {a: _Attribute(labels[a]) for a in names}
        qs, opts = {}, {}
        for a in names:
            q = _posterior(base.shape[1], attrs[a].n_classes, self.q_hidden)
            q.load_state_dict(cals[a]["q_state"])
            qs[a] = q
            opts[a] = torch.optim.Adam(
                q.parameters(), lr=self.q_lr, weight_decay=self.q_weight_decay
            )
        alpha = torch.zeros(len(names), requires_grad=True)
        opt = torch.optim.Adam([alpha], lr=self.combine_lr)
        torch.manual_seed(self.seed)
        for _ in range(int(self.combine_iterations) if len(names) > 1 else 0):
            x = (torch.einsum("t,tnd->nd", torch.softmax(alpha, 0), stack) - mu) / sd
            for a in names:
                attrs[a].fit(qs[a], opts[a], x, self.combine_q_steps)
            total = sum(attrs[a].club(qs[a], x) for a in names)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        w = torch.softmax(alpha.detach(), 0)
        u = torch.einsum("t,tnd->nd", w, stack)
        with torch.no_grad():
            x = (u - mu) / sd
            est = {a: float(attrs[a].club(qs[a], x)) for a in names}
        return u.numpy(), {"weights": dict(zip(names, w.tolist())), "club": est}

    # ------------------------------------------------------------------ unlearner
    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        ds = task.dataset
        alive = ~task.after.forgotten_users
        named = {a for r in task.requests for a in r.attributes}
        # attributes requested now or earlier (hidden for users who still exist)
        hidden = {}
        for a, m in task.after.hidden.items():
            earlier = task.before.hidden.get(a)
            requested = a in named or (earlier is not None and (earlier & alive).any())
            if requested and (m & alive).any():
                hidden[a] = m & alive
        labels, rows = {}, {}
        for a, mask in sorted(hidden.items()):
            y, classes = attribute_labels(ds, a, self.min_class_size)
            if len(classes) < 2:
                raise LlmrecError(f"attribute {a!r} has fewer than two classes to unlearn")
            labels[a], rows[a] = y, mask.copy()
        if not labels:
            raise LlmrecError("LEGO needs an attribute request")
        u_final, i_final = model.final_embeddings()
        u0 = u_final.detach().cpu().numpy().astype(np.float32)
        prepare = monitor.elapsed()
        cals, info = self.calibrations(u0, labels, rows)
        t1 = time.perf_counter()
        with _threads(1):
            users, comb = self.combine(u0, cals, labels)
        info["combine_seconds"] = time.perf_counter() - t1
        info["prepare_seconds"] = prepare
        new = clone(model)
        info.update(assign_final(new, torch.as_tensor(users), i_final.detach().cpu()))
        info.update(
            iterations=1,
            attributes=list(labels),
            weights=comb["weights"],
            club_after=comb["club"],
            club_calibration={a: [c["club"][0], c["club"][-1]] for a, c in cals.items()},
            mean_relative_change=float(
                np.mean(np.linalg.norm(users - u0, axis=1) / (np.linalg.norm(u0, axis=1) + 1e-12))
            ),
        )
        monitor.report(new, iteration=1, **{f"weight_{a}": w for a, w in comb["weights"].items()})
        return new, info
