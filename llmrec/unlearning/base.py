"""The :class:`Unlearner` interface, the data a request leaves behind, and the run record.

An unlearner is configured in ``__init__`` (scikit-learn style: every parameter is a keyword,
:meth:`Unlearner.get_params` returns them) and applied with::

    new_model, record = unlearner.unlearn(model, workspace_or_data, requests)

``unlearn`` never modifies ``model``. The *retained training data* is split part 0 of the
interactions the :class:`RetainedView` keeps after applying the requests to the view the model
was trained on (``model.ledger_version``); the *forget set* is the training pairs the requests
removed. The returned model carries the ledger version the requests lead to (when known) and the
:class:`UnlearnRecord` holds wall seconds, peak memory, iterations, the resolved settings and a
per-iteration history.
"""

from __future__ import annotations

import abc
import copy
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from llmrec.data.dataset import Dataset
from llmrec.data.parts import Pairs, RetainedData, part_pairs
from llmrec.data.requests import ForgetRequest
from llmrec.data.retained import RetainedView
from llmrec.data.split import TRAIN, Split
from llmrec.errors import LlmrecError, RequestError
from llmrec.models import CFModel, build_model
from llmrec.models.training import hyper_parameters
from llmrec.unlearning.method import Method

Callback = Callable[[CFModel, dict], None]
T = TypeVar("T")


@dataclass
class UnlearnTask:
    """What an unlearner needs: the dataset, its split, the views before/after the requests."""

    dataset: Dataset
    split: Split
    before: RetainedView
    after: RetainedView
    requests: tuple[ForgetRequest, ...] = ()
    version: int | None = None

    @cached_property
    def _retained(self) -> RetainedData:
        return RetainedData.of(self.after, self.split)

    def retained_data(self) -> RetainedData:
        """The retained train/valid/test pairs of the view after the requests (built once)."""
        return self._retained

    @property
    def train(self) -> Pairs:
        """Retained training pairs."""
        return self._retained.train

    @property
    def valid(self) -> Pairs:
        return self._retained.valid

    @property
    def test(self) -> Pairs:
        return self._retained.test

    @cached_property
    def train_before(self) -> Pairs:
        """Training pairs of the model being unlearned."""
        return part_pairs(self.dataset, self.split, TRAIN, keep=self.before.keep)

    @cached_property
    def forget(self) -> Pairs:
        """Training pairs removed by the requests (the forget set)."""
        return part_pairs(self.dataset, self.split, TRAIN, keep=self.before.keep & ~self.after.keep)

    @cached_property
    def users_without_data(self) -> np.ndarray:
        """Bool per user: no retained training pair."""
        return np.bincount(self.train[0], minlength=self.dataset.n_users) == 0

    @cached_property
    def attribute_masks(self) -> dict[str, np.ndarray]:
        """Per attribute newly hidden by the requests: bool mask of the users it concerns."""
        out = {}
        for a, m in self.after.hidden.items():
            prev = self.before.hidden.get(a, np.zeros_like(m))
            new = m & ~prev
            if new.any():
                out[a] = new
        return out

    @property
    def kinds(self) -> set[str]:
        return {r.kind for r in self.requests}


def make_task(
    data: Any,
    requests: Sequence[ForgetRequest] | ForgetRequest | None = None,
    model: CFModel | None = None,
    version: int | None = None,
) -> UnlearnTask:
    """Build an :class:`UnlearnTask`.

    ``data`` is a :class:`~llmrec.workspace.Workspace`: the model's view is read from its ledger
    at ``model.ledger_version``; when the requests are recorded there, the target is the newest of
    their versions and the task covers every ledger entry between (so the unlearned model reflects
    that ledger version); otherwise the requests are applied to the model's view. Or ``data`` is
    a ``(Dataset, Split)`` or ``(Dataset, Split, RetainedView)`` tuple (the view defaults to the
    full data), or an existing :class:`UnlearnTask` (returned as is when ``requests`` is None).
    """
    if isinstance(data, UnlearnTask):
        if requests is None:
            return data
        return make_task((data.dataset, data.split, data.before), requests, model, version)
    if isinstance(requests, ForgetRequest):
        requests = [requests]
    if not requests:
        raise RequestError("no forget request given")
    from llmrec.workspace import Workspace

    if isinstance(data, Workspace):
        ds, split = data.dataset, data.split
        base = model.ledger_version if model is not None and model.ledger_version else 0
        before = data.view(base) if data.ledger_path.exists() else RetainedView.full(ds)
        if data.ledger_path.exists():
            with data.ledger() as led:
                known = {e.request.content_hash: e.version for e in led.entries()}
                found = [known.get(r.content_hash) for r in requests]
                if version is None and all(v is not None for v in found):
                    version = max([before.version, *found])
                if version is not None:
                    # the model must end up reflecting every request up to that version
                    entries = led.entries(upto=version, after=before.version)
                    for r in requests:
                        r.validate(ds)
                    after = data.view(version)
                    reqs = tuple(e.request for e in entries) or tuple(requests)
                    return UnlearnTask(ds, split, before, after, reqs, version)
    elif isinstance(data, tuple) and len(data) in (2, 3):
        ds, split = data[0], data[1]
        before = data[2] if len(data) == 3 else RetainedView.full(ds)
    else:
        raise TypeError("data must be a Workspace, (Dataset, Split[, RetainedView]) or UnlearnTask")
    after = before.copy()
    for r in requests:
        r.validate(ds)
        after.apply(r)
    if version is not None:
        after.version = int(version)
    return UnlearnTask(ds, split, before, after, tuple(requests), version)


@dataclass
class UnlearnRecord:
    """What one unlearning run cost, what it unlearned and how it was configured (``seconds``:
    wall clock, ``cpu_seconds``: CPU time of the process, less sensitive to other load on the
    machine; ``requests``: the requests the result reflects, up to ``ledger_version``)."""

    method: str
    model: str
    seconds: float
    cpu_seconds: float
    peak_memory_mb: float
    peak_rss_mb: float
    iterations: int
    converged: bool
    settings: dict
    ledger_version: int | None
    n_retained: int
    n_forgotten: int
    history: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled by a thread)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> float:
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._rss())

    def __enter__(self) -> PeakMemory:
        self.start_mb = self.peak_mb = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss())

    @property
    def increase_mb(self) -> float:
        return self.peak_mb - self.start_mb


class Monitor:
    """Clock that excludes callback time, plus the per-iteration history of a run."""

    def __init__(self, callback: Callback | None = None) -> None:
        self.callback = callback
        self.history: list[dict] = []
        self.start()

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        self._paused = self._cpu_paused = 0.0

    def elapsed(self) -> float:
        """Wall seconds since :meth:`start`, callbacks excluded."""
        return time.perf_counter() - self._t0 - self._paused

    def cpu(self) -> float:
        """CPU seconds of this process (all threads) since :meth:`start`, callbacks excluded."""
        return time.process_time() - self._c0 - self._cpu_paused

    def off_clock(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
        """Run ``fn(*args)`` with the wall and CPU clocks paused; returns its result and its wall
        seconds (set-up a request does not pay for, e.g. building a cached model)."""
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        wall = time.perf_counter() - t
        self._paused += wall
        self._cpu_paused += time.process_time() - c
        return out, wall

    def report(self, model: CFModel, **entry: Any) -> None:
        """Record one iteration (with the elapsed seconds) and run the callback off the clock."""
        entry = {"seconds": self.elapsed(), **entry}
        self.history.append(entry)
        if self.callback is not None:
            self.off_clock(self.callback, model, dict(entry))


class Unlearner(Method, abc.ABC):
    """Base class of the embedding unlearners. Subclasses set ``name`` (and ``handles``,
    ``exact``, ``workspace_cache`` where the defaults of :class:`Method` do not fit), implement
    :meth:`_unlearn` and register with :func:`llmrec.unlearning.registry.register_method`."""

    name: ClassVar[str] = "unlearner"
    family: ClassVar[str] = "embedding"

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.param_names()}

    @classmethod
    def highlights(cls, info: dict[str, Any]) -> list[tuple[str, Any]]:
        """The method-specific figures of a record's ``info`` worth showing with its result,
        as ``(label, value)`` rows (none by default)."""
        return []

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def unlearn(
        self,
        model: CFModel,
        data: Any,
        requests: Sequence[ForgetRequest] | ForgetRequest | None = None,
        callback: Callback | None = None,
    ) -> tuple[CFModel, UnlearnRecord]:
        """Return the unlearned copy of ``model`` and the run record.

        ``callback(model, entry)`` is called after every iteration with the history entry; its
        time is excluded from ``seconds`` (used by benchmarks to trace convergence).
        """
        task = make_task(data, requests, model)
        bad = task.kinds - set(self.handles)
        if bad:
            span = (
                f" (model at ledger v{task.before.version}, target v{task.version})"
                if task.version is not None
                else ""
            )
            raise LlmrecError(
                f"method {self.name!r} handles {', '.join(self.handles)} requests, "
                f"not {', '.join(sorted(bad))}{span}"
            )
        if len(task.forget[0]) == 0 and (
            "attribute" not in self.handles or not task.attribute_masks
        ):
            hides = (
                " and hide no attribute it does not reflect" if "attribute" in self.handles else ""
            )
            raise LlmrecError(
                f"the requests remove no training interaction of this model{hides} "
                f"(trained at ledger version {model.ledger_version})"
            )
        monitor = Monitor(callback)
        with PeakMemory() as mem:
            monitor.start()
            new, info = self._unlearn(model, task, monitor)
            seconds, cpu_seconds = monitor.elapsed(), monitor.cpu()
        new.ledger_version = task.version
        new.eval()
        record = UnlearnRecord(
            method=self.name,
            model=model.model_name,
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            peak_memory_mb=mem.increase_mb,
            peak_rss_mb=mem.peak_mb,
            iterations=int(info.pop("iterations", len(monitor.history))),
            converged=bool(info.pop("converged", True)),
            settings={"method": self.name, **self.get_params(), "model_config": model.config},
            ledger_version=task.version,
            n_retained=int(len(task.train[0])),
            n_forgotten=int(len(task.forget[0])),
            history=monitor.history,
            info=info,
            requests=[r.to_dict() for r in task.requests],
        )
        return new, record

    @abc.abstractmethod
    def _unlearn(self, model: CFModel, task: UnlearnTask, monitor: Monitor) -> tuple[CFModel, dict]:
        """The method itself: return the unlearned copy of ``model`` and run details."""


# ---------------------------------------------------------------------- shared helpers


def clone(model: CFModel, graph: Pairs | None = None) -> CFModel:
    """Copy of a model (tables, config, history, ledger version); a graph model gets ``graph``
    as its propagation graph, or a copy of the original's."""
    new = build_model(model.model_name, model.n_users, model.n_items, **hyper_parameters(model))
    new.load_state_dict(copy.deepcopy(model.state_dict()))
    if graph is not None:
        set_graph(new, *graph)
    elif getattr(model, "_graph", None) is not None:
        set_graph(new, *model._graph)
    new.history = list(model.history)
    new.ledger_version = model.ledger_version
    new.extra = dict(model.extra)
    return new


def initial_tables(model: CFModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded initial base tables of ``model`` (what training from scratch starts from)."""
    fresh = build_model(model.model_name, model.n_users, model.n_items, **hyper_parameters(model))
    return fresh.user_emb.weight.detach().clone(), fresh.item_emb.weight.detach().clone()


def set_graph(model: CFModel, users: np.ndarray, items: np.ndarray) -> None:
    """Rebuild a graph model's propagation graph on ``(users, items)`` (no-op for BPR-MF)."""
    if hasattr(model, "set_graph"):
        model.set_graph(users, items)


def sample_triples(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    n_neg: int,
    seed: int,
    known: Pairs | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed BPR triples ``(u, i, j)``: ``n_neg`` negatives per pair, uniform over the items the
    user has no pair with in ``known`` (default: the pairs themselves)."""
    from llmrec.models import NegativeSampler

    u = torch.as_tensor(np.asarray(users), dtype=torch.int64)
    i = torch.as_tensor(np.asarray(items), dtype=torch.int64)
    ku, ki = known if known is not None else (u, i)
    sampler = NegativeSampler(n_users, n_items, ku, ki)
    gen = torch.Generator().manual_seed(int(seed))
    neg = sampler.sample(u, n_neg, gen)
    return u.repeat_interleave(n_neg), i.repeat_interleave(n_neg), neg.reshape(-1)
