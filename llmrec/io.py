"""Atomic artifact writes (temp file in the same folder + ``os.replace``) and run metadata."""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from llmrec.errors import LlmrecError

#: below this many free bytes a failed write is taken for a full disk (numpy and FAISS report
#: short writes without an errno: "40000 requested and 2016 written", "write error")
FULL_DISK_BYTES = 1 << 20


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if disk_full(exc, path.parent):
            raise LlmrecError(
                f"no space left on the device writing {path}; nothing was changed there "
                "(free some space and run the command again)"
            ) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def disk_full(exc: BaseException, folder: str | Path) -> bool:
    """Whether ``exc``, raised while writing into ``folder``, means the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < FULL_DISK_BYTES
    except OSError:
        return False


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads(object_pairs_hook=...)``: a JSON object whose key repeats is an error
    (JSON would silently keep the last value: ``{"users": ["1"], "users": ["2"]}``)."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:40]!r} in a JSON object")
        out[k] = v
    return out


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: object) -> None:
    """Strict JSON (non-finite floats written as ``null``), atomically."""
    text = json.dumps(finite(obj), indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    atomic_write_text(path, text + "\n")


def bracket_depths(
    text: str, opens: str = "[{", closes: str = "]}", start: int = 0
) -> Iterator[tuple[int, int]]:
    """``(index, depth)`` after every bracket of JSON-like ``text`` from ``start``: ``opens``
    count up, ``closes`` down, and brackets inside strings (with their escapes) are skipped.
    The one scanner behind bounded-nesting checks and lenient extraction of an object."""
    depth, in_str, esc = 0, False, False
    for k in range(start, len(text)):
        ch = text[k]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in opens:
            depth += 1
            yield k, depth
        elif ch in closes:
            depth -= 1
            yield k, depth


def read_json_if_present(path: str | Path) -> Any:
    """The JSON in ``path``; ``None`` when there is no such file (a corrupt one raises
    ``ValueError``)."""
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def read_json_object(path: str | Path) -> dict | None:
    """The JSON object in ``path``; ``None`` when the file is missing, unreadable, not JSON or
    not an object (for discovery and manifests that are checked elsewhere)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def atomic_save(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _jsonable(o: object):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def finite(obj: object) -> object:
    """``obj`` with every NaN/Infinity float (Python or NumPy, nested anywhere) replaced by
    ``None``, so that the JSON written is strict (RFC 8259 has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [finite(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.floating):
            return float(obj) if np.isfinite(obj) else None
        if isinstance(obj, np.ndarray):
            return finite(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    return obj


def to_json(obj: object, indent: int | None = None, strict: bool = False) -> str:
    """JSON text; ``strict``: non-finite floats become ``null`` (what the CLI prints)."""
    if strict:
        return json.dumps(finite(obj), indent=indent, default=_jsonable, allow_nan=False)
    return json.dumps(obj, indent=indent, default=_jsonable)


PACKAGES = (
    "llmrec",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "faiss-cpu",
    "transformers",
    "peft",
    "accelerate",
    "sentence-transformers",
)


def versions() -> dict[str, str]:
    """Python, platform and the versions of the packages results depend on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out
