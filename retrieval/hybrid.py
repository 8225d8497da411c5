"""Candidate lists a retrieval store serves: the generator's, the text neighbours', or both.

* ``ease`` (default) — the co-occurrence generator's top-n (:mod:`retrieval.candidates`). An item
  without retained train interactions scores 0 there, so a new item is never proposed.
* ``text`` — the FAISS text neighbours of the user's retained history: the items whose vectors
  are nearest (inner product) to the unit mean of the unit vectors of the user's retained train
  items. Users without a retained history get the generator's list.
* ``hybrid`` — the generator's first ``n - m`` items, then the ``m`` nearest text neighbours
  among the items without retained train interactions (``m = text_slots(n)``: a quarter of the
  list, at least one), then the generator's next items if fewer than ``m`` such items are left.
  The generator's head is untouched, so its top ``n - m`` (and every metric at a cut-off up to
  it) is the same, and the tail holds the new items the generator cannot score (it ranks an
  item no retained interaction reaches at the bottom); text neighbours among items with
  interactions would crowd those out (on ml-100k's cold-item split with 20 candidates, 11 of 441
  users with a cold test item get one in their list that way, 63 with the new items only).

Exactly unlearnable as the store is: the text vectors are functions of item text (no user
data), forgotten items are removed from the index, and the query is the user's retained history
at the store's ledger version; the same blocked items (history, suppressed, forgotten) are
excluded from every part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SOURCES = ("ease", "text", "hybrid")
DEFAULT_SOURCE = "ease"


def check_source(name: str) -> str:
    """``name`` if it is a candidate list a store can serve, else ValueError."""
    if name not in SOURCES:
        raise ValueError(f"candidate source must be one of {', '.join(SOURCES)}, got {name!r}")
    return name


def text_slots(n: int) -> int:
    """How many of a hybrid list's ``n`` places go to text neighbours (a quarter, at least 1)."""
    return max(1, int(n) // 4) if n > 0 else 0


def history_queries(unit_vectors: np.ndarray, rows: Sequence[np.ndarray]) -> np.ndarray:
    """One query per user: the unit mean of its history items' unit vectors (zero without a
    history), float32 ``[len(rows), d]``."""
    q = np.zeros((len(rows), unit_vectors.shape[1]), np.float64)
    for k, items in enumerate(rows):
        if len(items):
            q[k] = unit_vectors[np.asarray(items, np.int64)].mean(axis=0)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    return (q / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def merge(cf: np.ndarray, text: np.ndarray, n: int) -> np.ndarray:
    """The hybrid list of length ``n`` (padded with -1) from the generator's list ``cf`` and the
    text neighbours ``text`` (both best first, -1 padded): ``cf``'s head, the first new
    neighbours, then ``cf``'s next items (see the module docstring)."""
    cf = cf[cf >= 0]
    text = text[text >= 0]
    head = cf[: max(0, n - text_slots(n))]
    fresh = text[~np.isin(text, head)][: text_slots(n)]
    chosen = np.concatenate([head, fresh])
    rest = cf[len(head) :]
    chosen = np.concatenate([chosen, rest[~np.isin(rest, chosen)]])[:n]
    out = np.full(n, -1, np.int64)
    out[: len(chosen)] = chosen
    return out
