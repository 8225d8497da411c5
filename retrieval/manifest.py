"""The retrieval store's manifest and where its files live (shared by the store and its audit).

``WORKSPACE/artifacts/<name>/manifest.json`` is the store's commit point: format, ledger version
and history head, dataset and split, configuration, current file names, content hashes and the
co-occurrence checksum. This module reads and checks it, resolves the embedding cache it points
to and checks its ledger claim; it holds no artifact.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from llmrec.data.ledger import Ledger
from llmrec.errors import ArtifactError
from llmrec.integrity import resolve_in
from llmrec.workspace import Workspace
from retrieval.encoders import data_key, make_encoder

FORMAT = 1
STORE_KIND = "retrieval-store"
DEFAULT_NAME = "retrieval"
COUNTS_FILE = "counts.npy"


def manifest_path(ws: Workspace, name: str = DEFAULT_NAME) -> Path:
    """``WORKSPACE/artifacts/<name>/manifest.json``."""
    return ws.root / "artifacts" / name / "manifest.json"


def manifest_degree(stats: dict) -> np.ndarray:
    """Item degrees recorded in a store manifest (``degree_b64``; a JSON list in old ones)."""
    if "degree_b64" in stats:
        return np.frombuffer(base64.b64decode(stats["degree_b64"]), dtype="<i8").astype(np.int64)
    return np.asarray(stats["degree"], dtype=np.int64)


def encoder_key(config: dict) -> str:
    """Cache key of the store's encoder."""
    return make_encoder(config["encoder"]).key


def embedding_data_key(ws: Workspace, config: dict) -> str:
    """Cache key of the data the store's encoder reads (the split too, for a CF encoder)."""
    split = ws.split.config() if config["encoder"]["kind"] == "cf" else None
    return data_key(ws.dataset, split)


def embedding_cache_dir(ws: Workspace, config: dict) -> Path:
    """The store's embedding cache folder (default ``WORKSPACE/artifacts/embeddings``)."""
    d = config.get("cache_dir")
    return resolve_in(ws.root, d) if d else ws.root / "artifacts" / "embeddings"


_MANIFEST_KEYS = {
    "format": int,
    "ledger_version": int,
    "dataset": str,
    "split": dict,
    "config": dict,
    "files": dict,
    "stats": dict,
}
_REBUILD = "rebuild it with 'llmrec index build'"


def read_store_manifest(path: Path) -> dict:
    """A store manifest, checked for shape; :class:`ArtifactError` naming the file if corrupt."""
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise ArtifactError(f"{path}: unreadable retrieval manifest ({why}); {_REBUILD}") from None
    if not isinstance(man, dict):
        raise ArtifactError(f"{path}: corrupt retrieval manifest (not an object); {_REBUILD}")
    for key, typ in _MANIFEST_KEYS.items():
        if not isinstance(man.get(key), typ) or isinstance(man.get(key), bool):
            raise ArtifactError(
                f"{path}: corrupt retrieval manifest (missing or bad {key!r}); {_REBUILD}"
            )
    if man["format"] != FORMAT:
        raise ArtifactError(f"{path}: unknown retrieval manifest format; {_REBUILD}")
    files = man["files"]
    if not all(
        isinstance(files.get(k), str) for k in ("index", "counts", "clusters", "embeddings")
    ):
        raise ArtifactError(f"{path}: corrupt retrieval manifest (bad 'files'); {_REBUILD}")
    if not isinstance(files.get("index_version"), int) or "checksum" not in man["stats"]:
        raise ArtifactError(f"{path}: corrupt retrieval manifest (bad 'files'); {_REBUILD}")
    if any(Path(files[k]).name != files[k] for k in ("index", "counts", "clusters")):
        raise ArtifactError(f"{path}: corrupt retrieval manifest (file outside the store)")
    return man


def check_ledger(
    ws: Workspace, what: str, version: int, head: str | None, ledger: Ledger | None = None
) -> None:
    """:class:`ArtifactError` unless the ledger holds ``version`` with the same history the
    artifact was built from (``head``: :meth:`Ledger.head` recorded at write time).
    ``ledger``: an open ledger of ``ws`` (default: open one if the workspace has a ledger)."""
    if ledger is None and not ws.ledger_path.exists():
        latest, have = 0, None
    else:
        led = ws.ledger() if ledger is None else ledger
        try:
            latest = led.version
            have = led.head(version) if head is not None and version <= latest else None
        finally:
            if ledger is None:
                led.close()
    if version > latest or (head is not None and have is not None and have != head):
        claim = f"reflects ledger version {version}"
        found = f"the ledger is at {latest}" if version > latest else "the ledger's history differs"
        raise ArtifactError(
            f"{what} {claim} but {found}: the ledger was lost or replaced; restore "
            f"{ws.ledger_path} from a backup, or rebuild every artifact"
        )
