"""Common machinery of the collaborative-filtering base models.

:class:`CFModel` is an ``nn.Module`` holding two base tables, ``user_emb`` and ``item_emb``
(``nn.Embedding``), trained on implicit-feedback pairs with the BPR loss. A subclass only says
how the base tables become the *final* embeddings used for scoring (:meth:`compute_embeddings`):
identity for BPR-MF, graph propagation for LightGCN.

Training (:meth:`CFModel.fit`) is vectorised and seeded: one ``torch.Generator`` drives the
epoch permutations and the negative sampling (:mod:`llmrec.models.sampling`), the base tables are
initialised from ``seed`` too, so the same seed and data give bit-identical weights on CPU.
Per batch the loss is

    mean_{(u,i,j)} -log sigmoid(s(u,i) - s(u,j))
        + reg / B * sum_{(u,i)} (|e_u|^2 + |e_i|^2 + sum_{j=1..n_neg} |e_j|^2)

over the ``B`` positive pairs of a batch, each with ``n_neg`` sampled negatives ``j``, where
``e`` are the *base* (ego) embeddings of every row the batch touches (RecBole's ``EmbLoss``
convention, extended to several negatives); optimised with Adam.
With ``valid=(users, items)`` the model is evaluated on valid NDCG@10 (train items masked) every
``eval_every`` epochs, stops after ``patience`` evaluations without improvement and restores the
best evaluated weights.
"""

from __future__ import annotations

import abc
import copy
import inspect
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmrec.models.sampling import NegativeSampler
from llmrec.progress import Progress

CHECKPOINT_FORMAT = 1

#: Registry of model classes by their short name (``"bpr"``, ``"lightgcn"``).
MODEL_REGISTRY: dict[str, type[CFModel]] = {}


def register(cls: type[CFModel]) -> type[CFModel]:
    """Class decorator adding a model to :data:`MODEL_REGISTRY` under ``cls.model_name``."""
    MODEL_REGISTRY[cls.model_name] = cls
    return cls


def _as_index_tensor(x: np.ndarray | torch.Tensor | Sequence[int], name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must hold integer indices, got {t.dtype}")
    return t.reshape(-1).to(torch.int64)


def even_batches(n: int, batch_size: int) -> list[int]:
    """Boundaries of ``ceil(n / batch_size)`` batches of (nearly) equal size covering ``0..n``.

    Slicing ``n`` pairs into ``batch_size`` chunks leaves a last batch of ``n mod batch_size``
    pairs; when that is tiny (65,633 retained pairs at 32,768 per batch leave 97) Adam, which
    normalises each step's size, takes a full-size step on a gradient estimated from a handful
    of pairs once per epoch, and training degrades badly (NDCG@10 0.287 -> 0.179 on core:5%users).
    Equal batches make every step's gradient as reliable as the others, whatever ``n`` is.
    """
    k = max(1, -(-int(n) // max(1, int(batch_size))))
    return [int(round(j * n / k)) for j in range(k + 1)]


class CFModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class: embeddings + BPR training + scoring + checkpointing.

    Subclasses set ``model_name`` and implement :meth:`compute_embeddings`; their ``__init__``
    passes every hyper-parameter to :meth:`_setup` so that ``config`` is complete.
    """

    model_name: ClassVar[str] = "cf"

    @classmethod
    def _hyper(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The hyper-parameters among ``values`` (a constructor's ``locals()``): every keyword of
        ``cls.__init__`` but the table sizes, in signature order."""
        names = list(inspect.signature(cls.__init__).parameters)[1:]
        return {k: values[k] for k in names if k not in ("n_users", "n_items")}

    def _setup(self, n_users: int, n_items: int, hparams: dict[str, Any]) -> None:
        if n_users < 1 or n_items < 1:
            raise ValueError(f"need at least one user and one item, got {n_users}, {n_items}")
        hparams = dict(hparams)
        hparams["device"] = str(hparams["device"])
        self.config: dict[str, Any] = {
            "model": self.model_name,
            "n_users": int(n_users),
            "n_items": int(n_items),
            **hparams,
        }
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.device = torch.device(hparams["device"])
        dim = int(hparams["dim"])
        self.user_emb = nn.Embedding(self.n_users, dim)
        self.item_emb = nn.Embedding(self.n_items, dim)
        self.history: list[dict[str, Any]] = []
        self.ledger_version: int | None = None
        self.extra: dict[str, Any] = {}
        self.reset_parameters()
        self.to(self.device)

    # ------------------------------------------------------------------ embeddings
    def reset_parameters(self) -> None:
        """Draw the base tables from ``N(0, init_std^2)`` with a generator seeded by ``seed``."""
        g = torch.Generator().manual_seed(int(self.config["seed"]))
        std = float(self.config["init_std"])
        with torch.no_grad():
            for table in (self.user_emb, self.item_emb):
                w = torch.randn(table.weight.shape, generator=g) * std
                table.weight.copy_(w.to(table.weight.device))

    @abc.abstractmethod
    def compute_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (differentiable) user and item embeddings from the current base tables."""

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embeddings, detached (one propagation for both)."""
        with torch.no_grad():
            u, i = self.compute_embeddings()
        return u.detach(), i.detach()

    def user_embeddings(self) -> torch.Tensor:
        """Final user embeddings ``[n_users, dim]`` used for scoring."""
        return self.final_embeddings()[0]

    def item_embeddings(self) -> torch.Tensor:
        """Final item embeddings ``[n_items, dim]`` used for scoring."""
        return self.final_embeddings()[1]

    def score(self, user_idx: np.ndarray | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Dot-product scores ``[len(user_idx), n_items]`` of the final embeddings."""
        idx = _as_index_tensor(user_idx, "user_idx").to(self.device)
        u, i = self.final_embeddings()
        return u[idx] @ i.T

    # ------------------------------------------------------------------ training
    def _prepare(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Hook run by :meth:`fit` before training (LightGCN builds its graph here)."""

    def copy_from(self, other: CFModel) -> None:
        """Copy the base tables (and any other parameters) of ``other`` into this model."""
        if other is self:
            return
        mine, theirs = self.state_dict(), other.state_dict()
        for name, value in mine.items():
            if name not in theirs or theirs[name].shape != value.shape:
                got = None if name not in theirs else tuple(theirs[name].shape)
                raise ValueError(f"cannot warm-start {name}: shape {tuple(value.shape)} vs {got}")
        with torch.no_grad():
            for name, value in mine.items():
                value.copy_(theirs[name].to(value.device))

    #: Largest ``n_users * n_items`` for which a batch is scored through the dense score matrix.
    dense_score_limit: ClassVar[int] = 1 << 23

    def _use_dense_scores(self, batch_rows: int) -> bool:
        """Score a batch via the full ``U @ I.T`` (three GEMMs) instead of row gathers.

        Both give the same loss; GEMMs win by far when the catalogue is small relative to the
        number of (user, item) rows in a batch (ml-100k: ~20x faster per epoch).
        """
        cells = self.n_users * self.n_items
        return cells <= self.dense_score_limit or cells <= 16 * batch_rows

    def _batch_loss(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        u_all, i_all = self.compute_embeddings()
        b, k = neg.shape
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [b, 1 + k]
        if self._use_dense_scores(items.numel()):
            flat = (users.unsqueeze(1) * self.n_items + items).reshape(-1)
            scores = (u_all @ i_all.T).reshape(-1).index_select(0, flat).view(b, k + 1)
        else:
            u = u_all.index_select(0, users)
            it = i_all.index_select(0, items.reshape(-1)).view(b, k + 1, -1)
            scores = (it * u.unsqueeze(1)).sum(-1)
        loss = -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()
        reg = float(self.config["reg"])
        if reg > 0:
            # sum over batch rows of |e|^2 == sum over table rows of count * |e|^2 (cheaper).
            cu = torch.bincount(users, minlength=self.n_users).to(u_all.dtype)
            ci = torch.bincount(items.reshape(-1), minlength=self.n_items).to(u_all.dtype)
            l2 = cu @ self.user_emb.weight.pow(2).sum(1) + ci @ self.item_emb.weight.pow(2).sum(1)
            loss = loss + reg * l2 / b
        return loss

    def _valid_ndcg(
        self, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray]
    ) -> float:
        from llmrec.evaluation import evaluate_ranking

        was_training = self.training
        self.eval()
        res = evaluate_ranking(
            self.score, self.n_items, train[0], train[1], valid[0], valid[1], ks=(10,)
        )
        self.train(was_training)
        return float(res["ndcg@10"])

    def fit(
        self,
        users: np.ndarray | torch.Tensor,
        items: np.ndarray | torch.Tensor,
        valid: tuple[np.ndarray, np.ndarray] | None = None,
        progress: bool = False,
        init_from: CFModel | None = None,
    ) -> CFModel:
        """Train on implicit-feedback pairs (internal indices) and return ``self``.

        Starts from the seeded initialisation, or from a copy of ``init_from``'s parameters
        (warm start; ``init_from=self`` continues from the current weights). ``valid`` enables
        early stopping on valid NDCG@10 (see module docstring; ``patience=0`` only tracks and
        restores the best epoch). ``progress`` shows a tqdm bar (loss, valid NDCG) on stderr. ``history``
        is replaced by this run's per-epoch records (``epoch``, ``loss``, ``seconds`` of
        training, and ``valid_ndcg@10`` when validated).
        """
        cfg = self.config
        dev = self.device
        u = _as_index_tensor(users, "users")
        i = _as_index_tensor(items, "items")
        if u.shape != i.shape:
            raise ValueError(f"users {tuple(u.shape)} and items {tuple(i.shape)} differ in shape")
        if u.numel() == 0:
            raise ValueError("no training pairs")
        if int(u.min()) < 0 or int(u.max()) >= self.n_users:
            raise ValueError(f"user index out of range [0, {self.n_users})")
        if int(i.min()) < 0 or int(i.max()) >= self.n_items:
            raise ValueError(f"item index out of range [0, {self.n_items})")

        if init_from is None:
            self.reset_parameters()
        else:
            self.copy_from(init_from)
        self._prepare(u, i)
        train_np = (u.cpu().numpy(), i.cpu().numpy())
        if valid is not None:
            valid = (np.asarray(valid[0], dtype=np.int64), np.asarray(valid[1], dtype=np.int64))

        sampler = NegativeSampler(self.n_users, self.n_items, u, i, device=dev)
        gen = torch.Generator(device=dev).manual_seed(int(cfg["seed"]))
        u, i = u.to(dev), i.to(dev)
        opt = torch.optim.Adam(self.parameters(), lr=float(cfg["lr"]))
        n, bs, n_neg = u.numel(), int(cfg["batch_size"]), int(cfg["n_neg"])
        patience, eval_every = int(cfg["patience"]), max(1, int(cfg["eval_every"]))
        bounds = even_batches(n, bs)

        self.history = []
        best, best_state, bad = -np.inf, None, 0
        self.train()
        bar = Progress(
            range(1, int(cfg["epochs"]) + 1),
            desc=f"train {self.model_name}",
            unit="epoch",
            disable=not progress,
            file=sys.stderr,
            leave=False,
        )
        for epoch in bar:
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen, device=dev)
            eu, ei = u[perm], i[perm]
            en = sampler.sample(eu, n_neg, gen)
            total = torch.zeros((), device=dev)
            for s, e in zip(bounds[:-1], bounds[1:]):
                bu, bi, bn = eu[s:e], ei[s:e], en[s:e]
                loss = self._batch_loss(bu, bi, bn)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.detach() * bu.numel()
            rec: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(total) / n,
                "seconds": time.perf_counter() - t0,
            }
            stop = False
            if valid is not None and (epoch % eval_every == 0 or epoch == int(cfg["epochs"])):
                score = self._valid_ndcg(train_np, valid)
                rec["valid_ndcg@10"] = score
                if score > best:
                    best, bad = score, 0
                    best_state = copy.deepcopy(self.state_dict())
                    rec["best"] = True
                else:
                    bad += 1
                    stop = patience > 0 and bad >= patience
            self.history.append(rec)
            if progress:
                post = {"loss": f"{rec['loss']:.4f}"}
                if "valid_ndcg@10" in rec:
                    post["valid_ndcg@10"] = f"{rec['valid_ndcg@10']:.4f}"
                bar.set_postfix(post)
            if stop:
                break
        if best_state is not None:
            self.load_state_dict(best_state)
        self.eval()
        return self

    # ------------------------------------------------------------------ persistence
    def _checkpoint_extra(self) -> dict[str, Any]:
        """Model-specific tensors to store beside the state dict (LightGCN: its graph)."""
        return {}

    def _restore_extra(self, payload: dict[str, Any]) -> None:
        """Inverse of :meth:`_checkpoint_extra`."""

    def save(
        self, path: str | os.PathLike[str], ledger_version: int, extra: dict | None = None
    ) -> Path:
        """Write one checkpoint file atomically (temp file + ``os.replace``); returns its path.

        The file holds the class name, ``config``, the state dict, ``ledger_version``, the
        training ``history`` and the caller's json-serialisable ``extra``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "class": type(self).__name__,
            "model": self.model_name,
            "config": dict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "ledger_version": int(ledger_version),
            "history": list(self.history),
            "extra": dict(extra or {}),
            "model_extra": self._checkpoint_extra(),
        }
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.ledger_version = int(ledger_version)
        self.extra = dict(extra or {})
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_users} users, {self.n_items} items, dim={self.config['dim']})"


def build_model(name: str, n_users: int, n_items: int, **overrides: Any) -> CFModel:
    """Construct a registered model (``"bpr"`` or ``"lightgcn"``) with default hyper-parameters
    replaced by ``overrides``."""
    key = name.lower()
    if key not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[key](n_users, n_items, **overrides)


def load_model(path: str | os.PathLike[str], device: str | None = None) -> CFModel:
    """Load a checkpoint written by :meth:`CFModel.save`.

    The returned model has ``config``, ``history``, ``ledger_version`` and ``extra`` set and is in
    eval mode; ``device`` overrides the saved device.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an llmrec model checkpoint")
    config = dict(payload["config"])
    name = config.pop("model")
    n_users, n_items = config.pop("n_users"), config.pop("n_items")
    if device is not None:
        config["device"] = device
    model = build_model(name, n_users, n_items, **config)
    model.load_state_dict(payload["state_dict"])
    model._restore_extra(payload.get("model_extra", {}))
    model.history = list(payload.get("history", []))
    model.ledger_version = int(payload["ledger_version"])
    model.extra = dict(payload.get("extra", {}))
    model.eval()
    return model
