"""The retained interactions of a view as ``(users, items)`` pairs, per split part.

:class:`RetainedData` is what every consumer of "the data that remains at ledger version v"
reads: training a model from scratch, evaluating it, unlearning (an
:class:`~llmrec.unlearning.base.UnlearnTask` holds the one of the view after its requests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.data.retained import RetainedView
from llmrec.data.split import TEST, TRAIN, VALID, Split

Pairs = tuple[np.ndarray, np.ndarray]


def part_pairs(dataset: Dataset, split: Split, keep: np.ndarray, part: int) -> Pairs:
    """``(users, items)`` of the interactions in split ``part`` that ``keep`` retains."""
    m = split.mask(part, keep)
    return dataset.inter_user[m], dataset.inter_item[m]


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
        """The retained pairs of every split part of ``view``."""
        ds = view.dataset
        return cls(view, *(part_pairs(ds, split, view.keep, p) for p in (TRAIN, VALID, TEST)))
