"""Cold-start tuning examples (``ExampleSettings.cold``) and candidate-list answers."""

from __future__ import annotations

import dataclasses

import numpy as np

from llmrec.llm.shards import ExampleSettings, epoch_examples, shard_data, shard_of
from llmrec.testing.fixtures import small_workspace


def _shard(tmp_path):
    ws = small_workspace(tmp_path)
    ds = ws.dataset
    return shard_data(ds, ws.split, ws.view(), shard_of(ds.user_tokens, 2, 3), 0)


def test_cold_examples_show_no_history_and_popularity_candidates(tmp_path):
    data = _shard(tmp_path)
    s = ExampleSettings(history=10_000, n_candidates=10, cold=0.3)
    exs = epoch_examples(data, s, seed=5, epoch=0)
    again = epoch_examples(data, s, seed=5, epoch=0)
    assert all(np.array_equal(a.targets, b.targets) for a, b in zip(exs, again))
    cold = [e for e in exs if len(e.history_items) == 0]
    assert 0 < len(cold) < len(exs)
    # the generator counts the shown (kept) histories: a cold user's candidates are by popularity
    degree = np.bincount(np.concatenate([e.history_items for e in exs]), minlength=data.n_items)
    for e in cold:
        rec = next(r for r in data.users if r.user == e.user)
        assert 0 < len(e.targets) <= min(len(rec.items), s.max_targets)
        assert np.isin(e.targets, rec.items).all()
        assert (np.diff(degree[e.candidates]) <= 0).all()


def test_no_cold_share_draws_the_examples_of_before(tmp_path):
    data = _shard(tmp_path)
    s = ExampleSettings(history=20, n_candidates=10)
    a = epoch_examples(data, s, seed=5, epoch=1)
    b = epoch_examples(data, dataclasses.replace(s, cold=0.0, answer_fill=True), seed=5, epoch=1)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x.targets, y.targets)
        assert np.array_equal(x.history_items, y.history_items)
        assert np.array_equal(x.candidates, y.candidates)
