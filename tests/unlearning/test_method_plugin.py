"""Acceptance 1 of issue 17: a method registered at run time is everywhere at once (the
``llmrec unlearn`` help, the contract suite, the comparison harness) with no other edit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llmrec.cli.main import main
from llmrec.testing.unlearners import check_unlearner, method_cases
from llmrec.unlearning import Unlearner, get_method, method_names, register_method
from llmrec.unlearning import unregister_method as _unregister
from llmrec.unlearning.base import clone


class ZeroForgotten(Unlearner):
    """Zero the base rows of the users left without retained training data; the propagation
    graph becomes the retained one."""

    name = "zero-forgotten"
    handles = ("user", "interactions")

    def _unlearn(self, model, task, monitor):
        new = clone(model, graph=task.train)
        gone = torch.as_tensor(task.users_without_data)
        with torch.no_grad():
            new.user_emb.weight[gone] = 0.0
        monitor.report(new, iteration=1, zeroed=int(gone.sum()))
        return new, {"iterations": 1, "zeroed": int(gone.sum())}


@pytest.fixture
def plugged():
    register_method(ZeroForgotten)
    yield ZeroForgotten.name
    _unregister(ZeroForgotten.name)


def test_registered_method_is_listed_by_llmrec_unlearn_help(plugged, capsys):
    with pytest.raises(SystemExit) as done:
        main(["unlearn", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "zero-forgotten [approximate; handles user, interactions]" in out
    assert "Zero the base rows of the users left without retained training data" in out
    assert "retrain, finetune, alteraser, reverse-bpr, lego, unlearnrec, sisa, receraser, " in out


def test_registered_method_passes_the_contract_suite(plugged, tiny):
    assert plugged in [case.values[0] for case in method_cases()]
    assert check_unlearner(plugged, tiny) == ["check_exact_equals_retrain"]  # it is approximate
    zeroed, _ = get_method(plugged)().unlearn(
        tiny.models["bpr"], (tiny.ds, tiny.split), [_user_request(tiny)]
    )
    assert not zeroed.user_emb.weight[[1, 5, 9]].any()


def test_registered_method_runs_through_llmrec_unlearn(plugged, tiny, tmp_path, capsys):
    import json

    ws = [
        "--workspace",
        str(tmp_path / "ws"),
        "--dataset",
        "tiny",
        "--data-dir",
        str(tiny.data_dir),
    ]
    req = tmp_path / "req.jsonl"
    req.write_text(_user_request(tiny).to_json() + "\n")
    assert main(["train", "--model", "bpr", "--epochs", "2", *ws]) == 0
    capsys.readouterr()
    assert main(["unlearn", "--method", plugged, "--request", str(req), "--json", *ws]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == plugged and res["ledger_version"] == 1
    assert res["record"]["info"]["zeroed"] == 3 and res["record"]["settings"]["method"] == plugged


def test_unregistered_method_is_gone(plugged):
    assert plugged in method_names()
    _unregister(plugged)
    assert plugged not in method_names()
    register_method(ZeroForgotten)  # the fixture removes it again


class Careless(Unlearner):
    """Breaks the contract on purpose: moves the input's rows, keeps its (full) graph, adds
    unseeded noise."""

    name = "careless-test"
    handles = ("user", "interactions")

    def _unlearn(self, model, task, monitor):
        with torch.no_grad():
            model.user_emb.weight[0] += 1.0
        new = clone(model)
        with torch.no_grad():
            new.item_emb.weight.add_(1e-3 * torch.randn(new.item_emb.weight.shape))
        return new, {"iterations": 0}


def test_the_contract_catches_a_careless_method(tiny):
    """The checks are not vacuous: each breach of :class:`Careless` fails its check."""
    from llmrec.testing.unlearners import (
        check_deterministic_for_a_seed,
        check_forgotten_pairs_not_trained_on,
        check_input_model_not_mutated,
    )

    own = dataclasses.replace(tiny, models={k: clone(m).eval() for k, m in tiny.models.items()})
    register_method(Careless)
    try:
        for check in (
            check_deterministic_for_a_seed,
            check_input_model_not_mutated,
            check_forgotten_pairs_not_trained_on,
        ):
            with pytest.raises(AssertionError):
                check(Careless.name, own)
    finally:
        _unregister(Careless.name)


def test_registered_method_is_offered_by_the_comparison_harness(plugged, capsys):
    from llmrec.cli.main import main
    from llmrec.experiments.compare import method_handles

    assert method_handles(plugged, "users")
    assert not method_handles(plugged, "attribute")
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert f"  {plugged} " in capsys.readouterr().out


def _user_request(tiny):
    from llmrec.data.requests import users_request

    return users_request(tiny.ds, [1, 5, 9])


def test_registered_method_runs_in_llmrec_compare(plugged, tmp_path):
    from llmrec.experiments.compare import run_compare
    from llmrec.testing.fixtures import write_tiny_dataset
    from llmrec.workspace import Workspace

    ws = Workspace(tmp_path / "ws", dataset="tiny", data_dir=write_tiny_dataset(tmp_path / "d"))
    hp = {"dim": 4, "epochs": 3, "batch_size": 64, "n_neg": 2}
    res = run_compare(ws, ["random:20%users"], [plugged], seeds=[1], model_overrides=hp)
    out = res["scenarios"]["random:20%users"][0]["methods"][plugged]
    assert out["family"] == "embedding" and out["utility"]["all"]["n_users"] > 0
