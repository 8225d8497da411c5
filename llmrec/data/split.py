"""Train/valid/test splits as a label per interaction (0 train, 1 valid, 2 test).

A split is computed once on the *full* dataset; the retained view of a ledger version simply
masks forgotten interactions out of every part. So a model retrained on the retained data sees
exactly the original split minus what was forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.errors import DataError

TRAIN, VALID, TEST = 0, 1, 2
PART_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


@dataclass(frozen=True)
class Split:
    """Split labels, one per interaction of the dataset, plus how they were made."""

    part: np.ndarray
    method: str
    seed: int
    ratios: tuple[float, ...] = (0.8, 0.1, 0.1)
    #: percent of the catalogue moved out of TRAIN and VALID (:func:`with_cold_items`)
    cold_items: float = 0.0

    def mask(self, part: int, keep: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of interactions in ``part`` (and in ``keep`` if given)."""
        m = self.part == part
        return m & keep if keep is not None else m

    def config(self) -> dict:
        out = {"method": self.method, "seed": self.seed, "ratios": list(self.ratios)}
        return {**out, "cold_items": self.cold_items} if self.cold_items else out


def _group_counts(ratios: tuple[float, ...], n: np.ndarray) -> np.ndarray:
    """RecBole's ``_calcu_split_ids`` for every user at once: counts per part, shape [users, parts].

    valid/test get ``int(ratio * n)``; a part whose share is in (0, 1) is bumped to 1 while the
    train part keeps more than one interaction (RecBole 1.2.1 rounding).
    """
    counts = np.stack([np.floor(np.asarray(r) * n).astype(np.int64) for r in ratios], axis=1)
    counts[:, 0] = n - counts[:, 1:].sum(axis=1)
    for i in range(1, len(ratios)):
        share = ratios[-i] * n
        bump = (counts[:, 0] > 1) & (share > 0) & (share < 1)
        counts[bump, -i] += 1
        counts[bump, 0] -= 1
    return counts


def random_split(
    ds: Dataset, ratios: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 2020
) -> Split:
    """Per-user random split (RecBole's default ``RS`` with ``group_by=user``)."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise DataError(f"split ratios must be three non-negative numbers, got {ratios}")
    total = sum(ratios)
    ratios = tuple(r / total for r in ratios)
    rng = np.random.default_rng(seed)
    key = rng.random(ds.n_inter)
    order = np.lexsort((key, ds.inter_user))  # by user, random within user
    return Split(_label(ds, order, ratios), "random", seed, ratios)


def leave_one_out(ds: Dataset, seed: int = 2020) -> Split:
    """Per user, the last interaction by time is test, the one before valid, the rest train.

    Ties in time are broken by file order. Users with one interaction keep it in train; with two,
    the later one is test.
    """
    if ds.timestamp is None:
        raise DataError(f"dataset {ds.name} has no timestamp field: leave-one-out needs one")
    order = np.lexsort((np.arange(ds.n_inter), ds.timestamp, ds.inter_user))
    users = ds.inter_user[order]
    n = np.bincount(users, minlength=ds.n_users)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    rank = np.arange(ds.n_inter) - start[users]
    from_end = n[users] - 1 - rank
    part_sorted = np.full(ds.n_inter, TRAIN, dtype=np.int8)
    part_sorted[(from_end == 0) & (n[users] >= 2)] = TEST
    part_sorted[(from_end == 1) & (n[users] >= 3)] = VALID
    part = np.empty(ds.n_inter, dtype=np.int8)
    part[order] = part_sorted
    return Split(part, "loo", seed, (0.0, 0.0, 0.0))


def _label(ds: Dataset, order: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    users = ds.inter_user[order]
    n = np.bincount(users, minlength=ds.n_users)
    counts = _group_counts(ratios, n)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    rank = np.arange(ds.n_inter) - start[users]
    b1 = counts[users, 0]
    b2 = b1 + counts[users, 1]
    part_sorted = np.where(rank < b1, TRAIN, np.where(rank < b2, VALID, TEST)).astype(np.int8)
    part = np.empty(ds.n_inter, dtype=np.int8)
    part[order] = part_sorted
    return part


def select_cold_items(ds: Dataset, percent: float, seed: int) -> np.ndarray:
    """``percent`` % of the catalogue (rounded, at least one item), drawn with ``seed`` among the
    items with at most the median number of interactions; sorted item indices."""
    if not 0 < percent <= 100:
        raise DataError(f"cold items: percentage must be in (0, 100], got {percent}")
    count = np.bincount(ds.inter_item, minlength=ds.n_items)
    pool = np.flatnonzero(count <= np.median(count))
    n = min(len(pool), max(1, int(round(percent / 100 * ds.n_items))))
    return np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))


def with_cold_items(ds: Dataset, split: Split, percent: float) -> Split:
    """``split`` with the interactions of :func:`select_cold_items` (seeded by the split's
    seed) moved out of TRAIN and VALID into TEST: items no model has seen an interaction of,
    whose test pairs measure what text alone can recommend."""
    part = split.part.copy()
    part[np.isin(ds.inter_item, select_cold_items(ds, percent, split.seed))] = TEST
    return Split(part, split.method, split.seed, split.ratios, float(percent))


def make_split(
    ds: Dataset,
    method: str = "random",
    seed: int = 2020,
    ratios=(0.8, 0.1, 0.1),
    cold_items: float = 0.0,
) -> Split:
    """Build a split by name: ``random`` (RS 8:1:1) or ``loo`` (leave-one-out by time);
    ``cold_items``: percent of the catalogue moved to TEST (:func:`with_cold_items`)."""
    if method == "random":
        split = random_split(ds, tuple(ratios), seed)
    elif method == "loo":
        split = leave_one_out(ds, seed)
    else:
        raise DataError(f"unknown split method {method!r} (expected 'random' or 'loo')")
    return with_cold_items(ds, split, cold_items) if cold_items else split
