"""Prefix trie used by constrained decoding."""

from __future__ import annotations

import pytest

from llmrec.llm.trie import ItemTrie


def make() -> ItemTrie:
    return ItemTrie({0: [1, 2], 1: [1, 2, 3], 2: [1, 4], 3: [5]})


def test_next_tokens_and_completion():
    t = make()
    assert sorted(t.next_tokens([])) == [1, 5]
    assert sorted(t.next_tokens([1])) == [2, 4]
    assert t.next_tokens([1, 2]) == [3]
    assert t.complete([1, 2]) == 0 and t.complete([1, 2, 3]) == 1 and t.complete([1]) is None
    assert t.next_tokens([9]) == [] and t.complete([9]) is None


def test_allowed_sets_prune_branches():
    t = make()
    assert t.next_tokens([], allowed={3}) == [5]
    assert t.next_tokens([1], allowed={1}) == [2]
    assert t.next_tokens([1], allowed={0, 1, 2}) == [2, 4]
    assert t.complete([1, 2], allowed={1}) is None


def test_remove_prunes_and_forgotten_items_cannot_be_spelled():
    t = make()
    t.remove_many([2, 3])
    assert t.next_tokens([]) == [1] and t.next_tokens([1]) == [2]
    assert 2 not in t and 3 not in t and len(t) == 2
    t.remove(0)
    assert t.complete([1, 2]) is None and t.next_tokens([1, 2]) == [3]
    t.remove(1)
    assert t.next_tokens([]) == [] and len(t) == 0
    t.remove(1)  # no-op


def test_duplicate_and_empty_sequences_are_rejected():
    with pytest.raises(ValueError):
        ItemTrie({0: [1], 1: [1]})
    with pytest.raises(ValueError):
        ItemTrie({0: []})
