"""The (users, items) pairs of split parts, optionally restricted to the retained interactions.

One helper for what every trainer, evaluator and retrieval source needs: "the retained train
(valid, test) pairs of ledger version v". See ``docs/design.md`` (the retained view).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.data.requests import ForgetRequest
from llmrec.data.retained import RetainedView
from llmrec.data.split import TEST, TRAIN, VALID, Split
from llmrec.errors import RequestError

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


def require_training_data(
    split: Split, view: RetainedView, requests: Sequence[ForgetRequest]
) -> None:
    """:class:`RequestError` when ``requests``, applied after ``view``, would leave no training
    interaction: no model, adapter or index could be rebuilt, so every later forget would fail.
    Checked before anything is recorded (the workspace stays usable)."""
    # numbered as if recorded next: only the mask matters here (one pass for 10^6 requests)
    after = view.copy().fold((view.version + k, r) for k, r in enumerate(requests, start=1))
    train = split.part == TRAIN
    if (after.keep & train).any():
        return
    kinds = ", ".join(sorted({r.kind for r in requests}))
    raise RequestError(
        f"refusing to record: after this {kinds} request no training interaction would remain "
        f"(of {int((view.keep & train).sum())} retained now), so nothing could be rebuilt or "
        "served; nothing was recorded (to erase everything, delete the workspace folder)"
    )
