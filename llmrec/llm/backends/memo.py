"""A process-wide memo of served rankings, keyed by hashes of everything the answer depends on.

The same prompt (token ids), candidate list, mode, answer settings, base weights and adapter
bytes give the same ranking, so a second serving of an unchanged user -- compare's original,
after-forget and gold states, a repeated ``recommend`` -- is a lookup. Nothing is keyed by a
user id: after a forget, a user whose history lost an item has another prompt, a user whose
candidates lost an item has another candidate list, a re-tuned adapter has other bytes, and (in
the modes where the model may name items outside the candidates) the forgotten set itself is
part of the key; each of these is a miss, never a stale hit. The memo lives in memory only
(it is not an artifact: nothing is written), holds at most ``max_entries`` answers (oldest
dropped first) and is emptied by :func:`clear_memo`.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.llm.backends.base import Ranking


def digest(*parts: Any) -> str:
    """sha256 (hex) over ``parts``: arrays by dtype, shape and bytes, everything else by repr."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


def folder_digest(folder: str | Path) -> str:
    """sha256 over the bytes of every file of a folder (an adapter: weights and config)."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def module_digest(module: Any) -> str:
    """sha256 over a torch module's state (names and tensor values; quantised ones
    dequantised)."""
    h = hashlib.sha256()

    def add(v: Any) -> None:
        if isinstance(v, tuple | list):
            for x in v:
                add(x)
        elif hasattr(v, "detach"):
            t = v.dequantize() if v.is_quantized else v
            h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
        else:
            h.update(repr(v).encode())

    for name, value in module.state_dict().items():
        h.update(name.encode())
        add(value)
    return h.hexdigest()


class RankMemo:
    """Rankings by key (see module docstring); ``hits``/``misses`` count lookups."""

    def __init__(self, max_entries: int = 200_000):
        self.max_entries = max_entries
        self._store: OrderedDict[str, Ranking] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: str) -> Ranking | None:
        r = self._store.get(key)
        if r is None:
            self.misses += 1
            return None
        self.hits += 1
        return copy.deepcopy(r)

    def put(self, key: str, ranking: Ranking) -> None:
        self._store[key] = copy.deepcopy(ranking)
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0


SHARED_MEMO = RankMemo()


def clear_memo() -> None:
    """Empty the process-wide memo."""
    SHARED_MEMO.clear()
