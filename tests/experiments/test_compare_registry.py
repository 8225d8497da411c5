"""The comparison harness reads the one method registry: the LLM path is a registered method of
family ``llm`` (in ``llmrec compare --help``, not in ``llmrec unlearn --help``), and a method
registered at run time is run by the harness like any other."""

from __future__ import annotations

import pytest

from llmrec.cli.main import main
from llmrec.errors import LlmrecError
from llmrec.experiments.compare import Cragru, CragruZeroShot, method_handles
from llmrec.unlearning.registry import get_method, method_names


def test_llm_path_is_a_registered_method_of_family_llm():
    assert get_method("cragru") is Cragru and get_method("cragru-zeroshot") is CragruZeroShot
    assert set(method_names("llm")) >= {"cragru", "cragru-zeroshot"}
    assert not set(method_names("llm")) & set(method_names("embedding"))
    assert Cragru.adapters and not CragruZeroShot.adapters and Cragru.exact
    with pytest.raises(LlmrecError, match="unknown method 'cragru'"):
        get_method("cragru", "embedding")


def test_handles_come_from_the_class():
    assert method_handles("cragru", "users") and method_handles("cragru", "stream")
    assert not method_handles("cragru", "attribute")
    assert method_handles("lego", "attribute") and not method_handles("lego", "users")
    assert method_handles("retrain", "file")
    with pytest.raises(LlmrecError, match="unknown method 'nope'"):
        method_handles("nope", "users")


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_helps_list_the_registry_by_family(capsys):
    compare_help = _help(["compare"], capsys)
    unlearn_help = _help(["unlearn"], capsys)
    for name in method_names("embedding"):
        assert f"  {name} " in compare_help and f"  {name} " in unlearn_help
    for name in method_names("llm"):
        assert f"  {name} " in compare_help and f"  {name} " not in unlearn_help
    assert "[llm; exact;" in compare_help


def test_unknown_compare_method_is_one_line(tmp_path, capsys):
    rc = main(["compare", "--workspace", str(tmp_path / "ws"), "--scenario", "random:5%users",
               "--methods", "retrain,nope"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "nope" in err[0]
