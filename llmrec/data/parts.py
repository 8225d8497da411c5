"""The (users, items) pairs of split parts, optionally restricted to the retained interactions.

One helper for what every trainer, evaluator and retrieval source needs: "the retained train
(valid, test) pairs of ledger version v". See ``docs/design.md`` (the retained view).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.data.retained import RetainedView
from llmrec.data.split import TEST, TRAIN, VALID, Split

Pairs = tuple[np.ndarray, np.ndarray]


def part_pairs(
    ds: Dataset, split: Split | np.ndarray, *parts: int, keep: np.ndarray | None = None
) -> Pairs:
    """(users, items) of the interactions in any of ``parts`` (and in ``keep`` if given).

    ``split`` is a :class:`~llmrec.data.split.Split` or its per-interaction part labels.
    """
    if not parts:
        raise ValueError("part_pairs needs at least one split part")
    labels = split.part if isinstance(split, Split) else np.asarray(split)
    m = np.isin(labels, parts) if len(parts) > 1 else labels == parts[0]
    if keep is not None:
        m &= keep
    return ds.inter_user[m], ds.inter_item[m]


@dataclass
class RetainedData:
    """Retained train/valid/test pairs (internal indices) of one ledger version."""

    view: RetainedView
    train: Pairs
    valid: Pairs
    test: Pairs

    @property
    def version(self) -> int:
        return self.view.version

    @classmethod
    def of(cls, view: RetainedView, split: Split) -> RetainedData:
        """The retained pairs of every part of ``split`` at ``view``."""
        ds = view.dataset
        return cls(view, *(part_pairs(ds, split, p, keep=view.keep) for p in (TRAIN, VALID, TEST)))
