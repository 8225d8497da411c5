"""The unlearning-method registry: what it accepts, refuses, and how callers see it."""

from __future__ import annotations

import pytest

import llmrec.unlearning as unlearning
from llmrec.errors import LlmrecError
from llmrec.unlearning import (
    METHODS,
    Unlearner,
    get_method,
    make_unlearner,
    method_names,
    register_method,
    unregister_method,
)
from llmrec.unlearning.base import clone


class _Copy(Unlearner):
    """Returns a copy of the model (a real, if useless, unlearner)."""

    name = "registry-test-copy"

    def _unlearn(self, model, task, monitor):
        return clone(model), {"iterations": 0}


def test_every_method_of_the_package_is_registered():
    assert method_names("embedding") == (
        "retrain", "finetune", "alteraser", "reverse-bpr", "lego", "unlearnrec", "sisa",
        "receraser",
    )  # fmt: skip
    for name in method_names("embedding"):
        cls = get_method(name)
        assert cls.name == name and issubclass(cls, Unlearner)
        assert getattr(unlearning, cls.__name__) is cls  # exported by the package
    exact = {n for n, c in METHODS.items() if c.exact and c.family == "embedding"}
    assert exact == {"retrain", "sisa", "receraser"}
    assert get_method("lego").handles == ("attribute",)


def test_register_get_unregister_round_trip():
    assert register_method(_Copy) is _Copy
    try:
        assert get_method("registry-test-copy") is _Copy
        assert method_names()[-1] == "registry-test-copy"
        assert isinstance(make_unlearner("registry-test-copy"), _Copy)
        register_method(_Copy)  # the same class again is a no-op (module reloads)
    finally:
        assert unregister_method("registry-test-copy") is _Copy
    assert "registry-test-copy" not in METHODS


def test_unknown_name_is_a_user_error_naming_the_known_ones():
    with pytest.raises(LlmrecError, match=r"unknown method 'nope' \(known: retrain, finetune"):
        get_method("nope")
    with pytest.raises(ValueError, match="unknown method"):
        make_unlearner("nope")
    with pytest.raises(LlmrecError):
        unregister_method("nope")


def test_refuses_duplicates_and_what_is_not_an_unlearner():
    class Impostor(_Copy):
        name = "retrain"

    with pytest.raises(ValueError, match="'retrain' is already registered by .*retrain.Retrain"):
        register_method(Impostor)
    assert get_method("retrain").__name__ == "Retrain"

    class NotAMethod:
        name = "plain"

    with pytest.raises(TypeError, match="Method subclass"):
        register_method(NotAMethod)

    class Abstract(Unlearner):
        name = "abstract"

    with pytest.raises(TypeError, match="abstract"):
        register_method(Abstract)

    class Inherits(_Copy):
        pass

    with pytest.raises(ValueError, match="must set its own class attribute 'name'"):
        register_method(Inherits)

    class BadName(_Copy):
        name = "Bad Name"

    with pytest.raises(ValueError, match="lower-case words"):
        register_method(BadName)

    class BadKinds(_Copy):
        name = "bad-kinds"
        handles = ("users",)

    with pytest.raises(ValueError, match="request kinds"):
        register_method(BadKinds)

    class BadFamily(_Copy):
        name = "bad-family"
        family = "graph"

    with pytest.raises(ValueError, match="family must be one of"):
        register_method(BadFamily)
    assert not {"plain", "abstract", "bad-name", "bad-kinds", "bad-family"} & set(METHODS)


def test_workspace_defaults_come_from_the_class(tmp_path):
    assert get_method("retrain").workspace_defaults(tmp_path, "bpr") == {}
    assert get_method("lego").workspace_defaults(tmp_path, "bpr") == {
        "cache_dir": str(tmp_path / "artifacts" / "lego-cache" / "bpr")
    }
    assert get_method("sisa").workspace_defaults(tmp_path, "lightgcn") == {
        "cache_dir": str(tmp_path / "artifacts" / "sisa-cache" / "lightgcn")
    }
    assert "seed" not in get_method("retrain").param_names()
    assert "seed" in get_method("finetune").param_names()
