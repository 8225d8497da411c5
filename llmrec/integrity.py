"""Content hashes recorded when an artifact is written and verified by ``llmrec audit``.

A *digest* is ``{relative file path: sha256}`` over the files of an artifact (one file, or every
file under a folder except hidden ones such as lock files and temporaries). Writers record it
(the ledger does so for every registered artifact); the audit recomputes it and names every file
that changed, disappeared or is unreadable, so garbled, truncated or edited artifacts are caught
even where the audit cannot re-derive their content from the retained data.

Paths in the ledger and in manifests are stored relative to the workspace, so a copied or moved
workspace stays valid (docs/design.md §3.3); :func:`relative_to_root` and :func:`resolve_in`
convert.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def digest(path: str | Path) -> dict[str, str]:
    """``{relative path: sha256}`` of a file (key ``""``) or of every visible file of a folder."""
    path = Path(path)
    if path.is_file():
        return {"": file_sha256(path)}
    if not path.is_dir():
        return {}
    return {f.relative_to(path).as_posix(): file_sha256(f) for f in _files(path)}


def verify(path: str | Path, recorded: dict[str, str]) -> list[str]:
    """Problems of ``path`` against a recorded :func:`digest` (empty: intact). Only the recorded
    files are checked, so files added later beside them are not reported."""
    path = Path(path)
    problems = []
    for rel, want in sorted(recorded.items()):
        f = path / rel if rel else path
        label = rel or path.name
        if not f.is_file():
            problems.append(f"{label} is missing")
            continue
        try:
            got = file_sha256(f)
        except OSError as exc:
            problems.append(f"{label} is unreadable ({exc.strerror or exc})")
            continue
        if got != want:
            problems.append(f"{label} changed since it was written (content hash differs)")
    return problems


#: the file that makes a folder a workspace, and the folder of its runs
WORKSPACE_FILE = "workspace.json"
RUNS = "runs"


def enclosing_workspace(root: str | Path) -> Path:
    """The folder copied or moved as one with workspace ``root`` (absolute): ``root`` itself,
    or, for a workspace kept inside another's ``runs/`` (a comparison's scratch workspace), the
    outermost such workspace."""
    root = Path(os.path.abspath(root))
    out = root
    for folder in root.parents:
        if (folder / WORKSPACE_FILE).is_file() and root.is_relative_to(folder / RUNS):
            out = folder
    return out


def relative_to_root(root: str | Path, path: str | Path) -> str:
    """``path`` relative to workspace ``root`` when it lies inside it (POSIX separators), else
    absolute. Inside a workspace that holds ``root`` in its runs (:func:`enclosing_workspace`)
    the path is relative too, climbing out of ``root`` with ``..``: the two move together.

    Relative inputs are taken relative to the current directory, as the caller meant them."""
    for norm in (os.path.abspath, os.path.realpath):  # a symlinked root or path: compare real
        root_abs, p = Path(norm(root)), Path(norm(path))
        if p.is_relative_to(enclosing_workspace(root_abs)):
            return Path(os.path.relpath(p, root_abs)).as_posix()
    return os.path.abspath(path)


def resolve_in(root: str | Path, stored: str | Path) -> Path:
    """The path a stored (workspace-relative or absolute) path names, under ``root``."""
    p = Path(stored)
    return p if p.is_absolute() else Path(root) / p
