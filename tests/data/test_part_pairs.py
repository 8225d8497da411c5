"""llmrec.data.parts: the retained pairs of split parts, the one helper every caller uses."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data.dataset import Dataset, load_dataset
from llmrec.data.parts import RetainedData, part_pairs
from llmrec.data.retained import RetainedView
from llmrec.data.split import TEST, TRAIN, VALID, Split, random_split
from llmrec.data.synthetic import SyntheticSpec, write_synthetic


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Dataset, Split]:
    root = tmp_path_factory.mktemp("parts")
    data = write_synthetic(SyntheticSpec(600, users=30, items=50, seed=3), root, "syn")
    ds = load_dataset("syn", data)
    return ds, random_split(ds, seed=1)


def test_pairs_of_a_part_restricted_to_the_kept_interactions(toy):
    ds, split = toy
    keep = np.arange(ds.n_inter) % 3 != 0
    u, i = part_pairs(ds, split, VALID, keep=keep)
    m = (split.part == VALID) & keep
    assert np.array_equal(u, ds.inter_user[m]) and np.array_equal(i, ds.inter_item[m])
    both = part_pairs(ds, split, TRAIN, VALID)
    assert len(both[0]) == int(np.isin(split.part, [TRAIN, VALID]).sum())
    labels = part_pairs(ds, split.part, TEST)  # plain part labels work too
    assert np.array_equal(labels[0], ds.inter_user[split.part == TEST])
    with pytest.raises(ValueError):
        part_pairs(ds, split)


def test_retained_data_of_a_view_holds_every_part_without_the_forgotten(toy):
    ds, split = toy
    view = RetainedView.full(ds)
    view.keep[::4] = False
    data = RetainedData.of(view, split)
    assert data.version == view.version
    total = sum(len(p[0]) for p in (data.train, data.valid, data.test))
    assert total == int(view.keep.sum())
    assert np.array_equal(data.test[1], ds.inter_item[(split.part == TEST) & view.keep])
