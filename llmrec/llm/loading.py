"""Loading a base causal LM faithfully: identity, weight hashes and loading options.

A base model is a local folder (resolved to an absolute path, so the reference holds from any
working directory; a workspace stores it relative to itself when it lies inside, docs/design.md
§3.3) or a hub id with a revision, always read from the local cache
(``local_files_only``: forget stages and audits never touch the network). Its identity is a
sha256 over every weight file (``*.safetensors``, ``*.bin``, ``*.pt``/``*.pth``, sharded index
files) and ``config.json``, so a changed or re-saved base is detected whatever its format.
:class:`LoadOptions` passes dtype, device map, attention implementation and
``trust_remote_code`` through to ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmrec.errors import ArtifactError

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.index.json", "config.json")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# transformers' named device maps and attention back-ends (others are errors here, not deep in
# from_pretrained)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu", "cuda", "mps")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass(frozen=True)
class LoadOptions:
    """``from_pretrained`` pass-through. ``dtype``: auto|float32|bfloat16|float16 (auto: the
    checkpoint's own dtype on an accelerator, float32 on CPU)."""

    dtype: str = "auto"
    device_map: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ArtifactError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        dm = self.device_map
        if dm is not None and not (
            dm in DEVICE_MAPS or (dm.startswith("cuda:") and dm[5:].isascii() and dm[5:].isdigit())
        ):
            raise ArtifactError(
                f"unknown device map {dm[:40]!r}; choose one of {', '.join(DEVICE_MAPS)} or cuda:N"
            )
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION:
            raise ArtifactError(
                f"unknown attention implementation {self.attn_implementation[:40]!r}; choose one "
                f"of {', '.join(ATTENTION)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def torch_dtype(self, device: str | None = None) -> Any:
        import torch

        if self.dtype == "auto":
            on_cpu = device in (None, "cpu") and self.device_map is None
            return torch.float32 if on_cpu else "auto"
        return getattr(torch, self.dtype)

    def model_kwargs(self, device: str | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "dtype": self.torch_dtype(device),
            "trust_remote_code": self.trust_remote_code,
            "local_files_only": True,
        }
        if self.revision:
            kw["revision"] = self.revision
        if self.device_map:
            kw["device_map"] = self.device_map
        if self.attn_implementation:
            kw["attn_implementation"] = self.attn_implementation
        return kw


def resolve_base(name_or_path: str | Path) -> str:
    """A local folder as an absolute path; anything else (a hub id) as given."""
    p = Path(name_or_path).expanduser()
    return str(p.resolve()) if p.exists() else str(name_or_path)


def base_folder(base: str, revision: str | None = None) -> Path:
    """The folder holding ``base``: itself if local, else its snapshot in the local hub cache.
    One clear :class:`ArtifactError` if neither exists (never a download)."""
    p = Path(base)
    if p.is_dir():
        return p
    if p.is_absolute() or base.startswith((".", "~")) or base.count("/") > 1:
        raise ArtifactError(f"base model {base} is missing (folder not found)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached / malformed id: both mean "not available"
        raise ArtifactError(
            f"base model {base!r} is neither a folder nor in the local hub cache (no download is "
            "attempted)"
        ) from None


def weights_hash(base: str, revision: str | None = None) -> str:
    """sha256 over every weight file and the config of the base model (hex)."""
    folder = base_folder(base, revision)
    files = sorted({f for pat in WEIGHT_PATTERNS for f in folder.glob(pat) if f.is_file()})
    if not any(f.name != "config.json" for f in files):
        raise ArtifactError(f"base model {base} has no weight files in {folder}")
    sig = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(tuple(str(f) for f in files), sig)


@lru_cache(maxsize=64)
def _hash_files(paths: tuple[str, ...], signature: tuple) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def snapshot_revision(base: str, revision: str | None = None) -> str | None:
    """The commit of a hub model's cached snapshot (``None`` for a local folder)."""
    if Path(base).is_dir():
        return None
    return base_folder(base, revision).name


def load_tokenizer(base: str, options: LoadOptions | None = None) -> Any:
    from transformers import AutoTokenizer

    o = options or LoadOptions()
    folder = base_folder(base, o.revision)
    return AutoTokenizer.from_pretrained(
        str(folder), trust_remote_code=o.trust_remote_code, local_files_only=True
    )


def load_model_config(base: str, options: LoadOptions | None = None) -> Any:
    from transformers import AutoConfig

    o = options or LoadOptions()
    folder = base_folder(base, o.revision)
    return AutoConfig.from_pretrained(
        str(folder), trust_remote_code=o.trust_remote_code, local_files_only=True
    )


def load_causal_lm(base: str, options: LoadOptions | None = None, device: str | None = None) -> Any:
    """``AutoModelForCausalLM`` of ``base`` with the options (from the local files only)."""
    from transformers import AutoModelForCausalLM

    o = options or LoadOptions()
    folder = base_folder(base, o.revision)
    kw = o.model_kwargs(device)
    kw.pop("revision", None)  # the snapshot folder already is that revision
    return AutoModelForCausalLM.from_pretrained(str(folder), **kw)


def ensure_pad(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token one (EOS, else UNK, else id 0): padding is always
    masked out, so which token pads does not change any score."""
    if tokenizer.pad_token_id is None:
        for tok in (tokenizer.eos_token, tokenizer.unk_token):
            if tok is not None:
                tokenizer.pad_token = tok
                break
        else:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)
    return tokenizer
