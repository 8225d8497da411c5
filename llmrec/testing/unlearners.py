"""The contract every unlearning method keeps, as plain check functions a plug-in author runs.

Each check is a function ``check(name, tiny)`` of a registered method's name and a
:class:`Tiny` (a small synthetic workspace with BPR and LightGCN models trained on it, built by
:func:`build_tiny`); it raises ``AssertionError`` on a breach (or skips, through pytest, where
it does not apply). :data:`CHECKS` lists them; :func:`method_cases` gives one pytest case per
embedding method of the registry, so a new ``@register_method`` class is checked without
editing any test::

    from llmrec.testing.unlearners import CHECKS, build_tiny

    @pytest.fixture(scope="session")
    def tiny(tmp_path_factory):
        return build_tiny(tmp_path_factory.mktemp("tiny"))

    @pytest.mark.parametrize("check", CHECKS)
    def test_my_method(check, tiny):
        check("my-method", tiny)

:data:`QUICK` only makes the built-in methods cheap on the tiny data (scikit-learn's
``PER_ESTIMATOR_CHECK_PARAMS`` idea).
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrec.data.dataset import Dataset
from llmrec.data.requests import KINDS, ForgetRequest, user_interactions_request, users_request
from llmrec.data.retained import RetainedView
from llmrec.data.split import TRAIN, Split
from llmrec.data.synthetic import SyntheticSpec, write_synthetic
from llmrec.errors import LlmrecError
from llmrec.models import CFModel, build_model
from llmrec.unlearning import Unlearner, get_method, make_task, method_names
from llmrec.unlearning.base import hyper_parameters
from llmrec.unlearning.fingerprint import pairs_hash
from llmrec.unlearning.sharded_model import ShardedModel
from llmrec.workspace import Workspace

__all__ = [
    "CHECKS",
    "FORGET_USERS",
    "QUICK",
    "TINY_MODEL",
    "Tiny",
    "build_tiny",
    "check_unlearner",
    "method_cases",
    "request_of",
]

#: base-model recipe of the tiny models (seconds to train)
TINY_MODEL = {"dim": 8, "epochs": 3, "batch_size": 256, "n_neg": 2, "seed": 7}


@dataclass
class Tiny:
    """A synthetic workspace (nothing recorded in its ledger) and models trained on its split."""

    ws: Workspace
    ds: Dataset
    split: Split
    models: dict[str, CFModel]
    data_dir: Path

    def fresh_workspace(self, root: Path) -> Workspace:
        """A new workspace (empty ledger) on the same data and split as :attr:`ws`."""
        return Workspace(root / "ws", dataset="tiny", data_dir=self.data_dir)


def build_tiny(root: Path) -> Tiny:
    """A synthetic dataset (1,500 interactions, 60 users, 80 items) in ``root/data``, its
    workspace ``root/ws`` (empty ledger) and a BPR and a LightGCN model trained on its train
    part with :data:`TINY_MODEL` (one torch thread)."""
    folder = root / "data"
    write_synthetic(SyntheticSpec(1500, users=60, items=80, seed=4), folder, "tiny")
    ws = Workspace(root / "ws", dataset="tiny", data_dir=folder)
    ds, split = ws.dataset, ws.split
    m = split.mask(TRAIN)
    models = {}
    for name in ("bpr", "lightgcn"):
        torch.set_num_threads(1)
        model = build_model(name, ds.n_users, ds.n_items, **TINY_MODEL)
        model.fit(ds.inter_user[m], ds.inter_item[m])
        model.ledger_version = 0
        models[name] = model.eval()
    return Tiny(ws, ds, split, models, folder)


#: constructor settings that keep a built-in method quick on the tiny data
QUICK: dict[str, dict] = {
    "finetune": {"epochs": 2},
    "alteraser": {"max_sweeps": 2},
    "reverse-bpr": {"epochs": 2, "batch_size": 256},
    "lego": {
        "iterations": 5, "q_warmup": 10, "q_steps": 2, "q_hidden": 8, "combine_iterations": 2,
        "combine_refine": 2, "workers": 1, "min_class_size": 5,
    },
    "unlearnrec": {"pretrain_requests": 3, "pretrain_epochs": 1, "hidden": 8},
    "sisa": {"n_shards": 3, "processes": 1},
    "receraser": {"n_shards": 3, "processes": 1, "agg_epochs": 2},
}  # fmt: skip
#: the users whose data the requests of the checks remove (internal indices)
FORGET_USERS = np.array([1, 5, 9])


def method_cases(names: tuple[str, ...] | None = None) -> list:
    """One pytest case per embedding method of the registry as it is now (or of ``names``)."""
    names = method_names("embedding") if names is None else names
    return [pytest.param(n, id=n) for n in names]


def make(name: str, **params) -> Unlearner:
    """The registered method ``name`` with its quick settings (and a fixed seed if it takes one)."""
    cls = get_method(name)
    params = {**QUICK.get(name, {}), **params}
    if "seed" in cls.param_names():
        params.setdefault("seed", 3)
    return cls(**params)


def request_of(kind: str, tiny) -> ForgetRequest:
    """A request of ``kind`` about :data:`FORGET_USERS` (or items they rated) on the tiny data."""
    ds = tiny.ds
    if kind == "interactions":
        return user_interactions_request(ds, FORGET_USERS)
    if kind == "user":
        return users_request(ds, FORGET_USERS)
    if kind == "item":
        items = np.unique(ds.inter_item[np.isin(ds.inter_user, FORGET_USERS)])[:3]
        return ForgetRequest("item", items=tuple(sorted(str(ds.item_tokens[i]) for i in items)))
    return ForgetRequest("attribute", attributes=("gender",))


def first_kind(cls: type[Unlearner]) -> str:
    """The request kind the checks use for a method: whole users when it can, else its first."""
    for kind in ("user", "interactions", "item", "attribute"):
        if kind in cls.handles:
            return kind
    raise AssertionError(f"{cls.__name__}.handles names no request kind")


def run(name: str, tiny, model: str = "bpr", kind: str | None = None, **params):
    """Unlearn the method's request from a tiny trained model: ``(new, record, task)``."""
    un = make(name, **params)
    req = request_of(kind or first_kind(type(un)), tiny)
    original = tiny.models[model]
    task = make_task((tiny.ds, tiny.split), [req], original)
    new, record = un.unlearn(original, task)
    return new, record, task


def embeddings(model) -> tuple[torch.Tensor, torch.Tensor]:
    u, i = model.final_embeddings()
    return u.detach().clone(), i.detach().clone()


def snapshot(model: CFModel) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": copy.deepcopy(model.config),
        "history": copy.deepcopy(model.history),
        "ledger_version": model.ledger_version,
        "extra": copy.deepcopy(model.extra),
        "graph": None if getattr(model, "_graph", None) is None else model._checkpoint_extra(),
    }


def assert_same_snapshot(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), f"parameter {k} changed"
    assert a["config"] == b["config"] and a["history"] == b["history"]
    assert a["ledger_version"] == b["ledger_version"] and a["extra"] == b["extra"]
    if a["graph"] is not None:
        for k in a["graph"]:
            assert torch.equal(a["graph"][k], b["graph"][k]), "the input's graph changed"


# ------------------------------------------------------------------------------ the checks


def check_deterministic_for_a_seed(name: str, tiny) -> None:
    """Two runs with the same settings and seed give the same model."""
    first, rec1, _ = run(name, tiny)
    again, rec2, _ = run(name, tiny)
    for a, b in zip(embeddings(first), embeddings(again)):
        assert torch.equal(a, b), "two runs with one seed differ"
    assert rec1.iterations == rec2.iterations and rec1.settings == rec2.settings


def check_input_model_not_mutated(name: str, tiny) -> None:
    """``unlearn`` returns a new model and leaves the input as it was (both base models)."""
    for model in ("bpr", "lightgcn"):
        before = snapshot(tiny.models[model])
        new, _, _ = run(name, tiny, model=model)
        assert new is not tiny.models[model]
        assert_same_snapshot(before, snapshot(tiny.models[model]))


def check_records_ledger_version_and_requests(name: str, tiny) -> None:
    """Through a workspace ledger: the model and the record carry the version the request got,
    the record names the method, its settings and the request."""
    cls = get_method(name)
    req = request_of(first_kind(cls), tiny)
    with tempfile.TemporaryDirectory() as tmp:
        ws = tiny.fresh_workspace(Path(tmp))  # its ledger holds this request only
        with ws.ledger() as led:
            led.record(request_of("item", tiny))  # an earlier entry the model already reflects
            version, _ = led.record(req)
        model = copy.deepcopy(tiny.models["bpr"])
        model.ledger_version = 1
        new, record = make(name).unlearn(model, ws, [req])
        task = make_task(ws, [req], model)
    assert version == 2 and new.ledger_version == record.ledger_version == version
    assert record.method == name and record.settings["method"] == name
    assert record.model == model.model_name
    assert record.requests == [req.to_dict()]
    assert record.n_retained == len(task.train[0])
    assert record.n_forgotten == len(task.forget[0])
    assert record.seconds >= 0 and record.iterations >= 0


def check_handles_respected(name: str, tiny) -> None:
    """Every kind in ``handles`` runs; any other kind is refused with one clear error."""
    cls = get_method(name)
    for kind in KINDS:
        if kind in cls.handles:
            new, record, _ = run(name, tiny, kind=kind)
            assert record.method == name and new.ledger_version is None
        else:
            before = snapshot(tiny.models["bpr"])
            with pytest.raises(LlmrecError, match=f"handles .* not {kind}"):
                run(name, tiny, kind=kind)
            assert_same_snapshot(before, snapshot(tiny.models["bpr"]))


def check_noop_request_is_harmless(name: str, tiny) -> None:
    """No request, or one the model's view already reflects: a clear error or an unchanged
    scoring, and the input untouched."""
    cls = get_method(name)
    model = tiny.models["bpr"]
    before = snapshot(model)
    with pytest.raises(LlmrecError, match="no forget request"):
        make(name).unlearn(model, (tiny.ds, tiny.split), [])
    req = request_of(first_kind(cls), tiny)
    applied = RetainedView.full(tiny.ds).apply(req)
    try:
        new, _ = make(name).unlearn(model, (tiny.ds, tiny.split, applied), [req])
    except LlmrecError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        users = torch.arange(tiny.ds.n_users)
        assert torch.allclose(new.score(users), model.score(users), atol=1e-5)
    assert_same_snapshot(before, snapshot(model))


def check_forgotten_pairs_not_trained_on(name: str, tiny, monkeypatch=None) -> None:
    """What the result was trained on holds no forgotten pair, where that is observable: every
    ``CFModel.fit`` call of the run, the propagation graph of a LightGCN result, the shards of a
    sharded result."""
    cls = get_method(name)
    if not {"user", "interactions"} & set(cls.handles):
        pytest.skip(f"{name} removes no interaction (handles {', '.join(cls.handles)})")
    fitted: list[tuple[np.ndarray, np.ndarray]] = []
    original_fit = CFModel.fit

    def spy(self, users, items, *args, **kwargs):
        fitted.append((np.asarray(users), np.asarray(items)))
        return original_fit(self, users, items, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CFModel, "fit", spy)
        new, _, task = run(name, tiny, model="lightgcn")
    n_items = tiny.ds.n_items
    forgotten = set((task.forget[0].astype(np.int64) * n_items + task.forget[1]).tolist())
    assert forgotten, "the check's request must remove training pairs"

    def keys(users, items) -> set[int]:
        return set((np.asarray(users, dtype=np.int64) * n_items + np.asarray(items)).tolist())

    observed = 0
    if isinstance(new, ShardedModel):
        # its fits include building the sharded form of the original (and user shards see
        # local indices): what the result holds is checked through its shards' data
        fitted = []
    for users, items in fitted:
        assert not keys(users, items) & forgotten, "fit saw a forgotten pair"
        observed += 1
    if isinstance(new, ShardedModel):
        parts = new.split(task.train)
        assert new.shard_hashes == [pairs_hash(p) for p in parts], "a shard holds other data"
        assert sum(new.shard_sizes) == len(task.train[0])
        observed += 1
    graph = getattr(new, "_graph", None)
    if graph is not None:
        assert not keys(*graph) & forgotten, "the result's graph holds a forgotten pair"
        observed += 1
    if not observed:
        pytest.skip(f"{name}'s training data is not observable")


def check_exact_equals_retrain(name: str, tiny) -> None:
    """An exact method's result equals training from scratch on the retained data: the base
    recipe for a plain CF result, every shard and the aggregator for a sharded one."""
    if not get_method(name).exact:
        pytest.skip(f"{name} is approximate")
    new, _, task = run(name, tiny)
    original = tiny.models["bpr"]
    if isinstance(new, ShardedModel):
        reference = new._copy().fit(task.train, processes=1)
    elif isinstance(new, CFModel):
        reference = build_model(
            original.model_name, original.n_users, original.n_items, **hyper_parameters(original)
        )
        reference.fit(*task.train)
    else:
        raise AssertionError(f"exact method {name} returned a {type(new).__name__}")
    for a, b in zip(embeddings(new), embeddings(reference)):
        assert torch.equal(a, b), "not what training from scratch on the retained data gives"


CHECKS = (
    check_deterministic_for_a_seed,
    check_input_model_not_mutated,
    check_records_ledger_version_and_requests,
    check_handles_respected,
    check_noop_request_is_harmless,
    check_forgotten_pairs_not_trained_on,
    check_exact_equals_retrain,
)


def check_unlearner(name: str, tiny: Tiny) -> list[str]:
    """Run every check of :data:`CHECKS` on the registered method ``name``; returns the names
    of the checks that did not apply to it (skipped). ``AssertionError`` on the first breach."""
    skipped = []
    for check in CHECKS:
        try:
            check(name, tiny)
        except pytest.skip.Exception:
            skipped.append(check.__name__)
    return skipped
