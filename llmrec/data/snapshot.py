"""Materialised retained views: a read loads the newest valid snapshot and folds only the newer
ledger entries instead of the whole ledger (issue 27, item 11).

A snapshot is one ``.npz`` file in ``WORKSPACE/retained/`` (beside the ledger) holding a
:class:`RetainedView`'s masks (and each dropped interaction's version) at one ledger version, with a header naming that version, the
ledger's :meth:`~llmrec.data.ledger.Ledger.head` at it, the dataset fingerprint and a SHA-256 of
the masks. It is used only when all of them still match: a rolled-back, replaced or edited
ledger, or a tampered file, makes it stale, never silently trusted (:func:`problems` is what
``llmrec audit`` reports, before a read replaces it). Writing a snapshot removes the others. A
snapshot of an older :data:`FORMAT` is not used and not reported (the next read replaces it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.data.retained import RetainedView

FOLDER = "retained"
#: 2: ``dropped`` (per-interaction versions) replaced the ``keep`` mask
FORMAT = 2
_NAME = re.compile(r"^v(\d+)\.npz$")


class _Ledger(Protocol):
    root: Path

    def head(self, version: int | None = None) -> str: ...


def folder(ledger: _Ledger) -> Path:
    """``WORKSPACE/retained``: where the ledger's snapshots live."""
    return Path(ledger.root) / FOLDER


def files(ledger: _Ledger) -> list[tuple[int, Path]]:
    """``(version, path)`` of every snapshot file, newest first."""
    d = folder(ledger)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(out, reverse=True)


def _arrays(view: RetainedView) -> dict[str, np.ndarray]:
    out = {
        "dropped": view.dropped,
        "forgotten_users": view.forgotten_users,
        "forgotten_items": view.forgotten_items,
    }
    out.update({f"hidden.{k}": v for k, v in sorted(view.hidden.items())})
    return out


def _hash(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k], dtype=np.int64 if k == "dropped" else bool)
        h.update(f"{k}:{a.size};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(ledger: _Ledger, view: RetainedView) -> Path:
    """Write ``view`` as the snapshot at its version (atomically) and remove the others."""
    arrays = _arrays(view)
    header = {
        "format": FORMAT,
        "version": int(view.version),
        "ledger_head": ledger.head(int(view.version)),
        "dataset": view.dataset.fingerprint,
        "sha256": _hash(arrays),
    }
    d = folder(ledger)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"v{int(view.version)}.npz"
    tmp = d / f".v{int(view.version)}.{os.getpid()}.tmp.npz"
    meta = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(tmp, __header__=meta, **arrays)
    os.replace(tmp, path)
    for _, p in files(ledger):
        if p != path:
            p.unlink(missing_ok=True)
    return path


def _read(path: Path, ds: Dataset, ledger: _Ledger, version: int) -> RetainedView | str | None:
    """The view in ``path`` if it is valid for ``ledger`` at ``version``, else the problem
    (``None``: an older format, neither used nor a problem)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["__header__"]).decode())
            if isinstance(header, dict) and header.get("format") != FORMAT:
                return None
            arrays = {
                k: np.asarray(z[k], dtype=np.int64 if k == "dropped" else bool)
                for k in z.files
                if k != "__header__"
            }
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"unreadable snapshot ({str(exc)[:120]})"
    if not isinstance(header, dict) or header.get("version") != version:
        return f"its header does not say ledger version {version}"
    if header.get("dataset") != ds.fingerprint:
        return "it belongs to another dataset"
    if header.get("ledger_head") != ledger.head(version):
        return (
            f"the ledger's history up to version {version} differs from the one it was built "
            "from (ledger rolled back, replaced or edited)"
        )
    if header.get("sha256") != _hash(arrays):
        return "its content does not match its recorded hash (modified after it was written)"
    shapes = {"dropped": ds.n_inter, "forgotten_users": ds.n_users, "forgotten_items": ds.n_items}
    if any(k not in arrays or arrays[k].shape != (n,) for k, n in shapes.items()):
        return "its masks do not fit the dataset"
    dropped = arrays["dropped"]
    if len(dropped) and (dropped.min() < 0 or dropped.max() > version):
        return f"it names interactions dropped outside ledger versions 0..{version}"
    hidden = {k[7:]: v for k, v in arrays.items() if k.startswith("hidden.")}
    return RetainedView(
        ds,
        version,
        dropped == 0,
        arrays["forgotten_users"],
        arrays["forgotten_items"],
        hidden,
        dropped,
    )


def latest(ledger: _Ledger, ds: Dataset, upto: int) -> RetainedView | None:
    """The newest valid snapshot at a version ``<= upto`` (``None``: none; fold from 0)."""
    for v, p in files(ledger):
        if v <= upto:
            got = _read(p, ds, ledger, v)  # a stale one is skipped: fold from an older one
            if isinstance(got, RetainedView):
                return got
    return None


def problems(ledger: _Ledger, ds: Dataset, newest: int) -> list[tuple[Path, str]]:
    """``(path, problem)`` for every snapshot that is not valid for the ledger (audit)."""
    out = []
    for v, p in files(ledger):
        if v > newest:
            out.append(
                (p, f"it claims ledger version {v}, the ledger is at {newest} (rolled back)")
            )
            continue
        got = _read(p, ds, ledger, v)
        if isinstance(got, str):
            out.append((p, got))
    return out
