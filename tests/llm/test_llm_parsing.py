"""Acceptance 4: whatever a model writes, the parser returns a valid ranking and never raises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.llm.parsing import extract_entries, parse_ranking

TOKENS = {f"<i{k}>": k for k in range(20)} | {str(k): k for k in range(20)}
CANDS = np.array([5, 3, 9, 1, 7, 2], dtype=np.int64)


def lookup(s: str) -> int | None:
    return TOKENS.get(s.strip())


def check(items: np.ndarray, forgotten: np.ndarray | None = None) -> None:
    expect = CANDS if forgotten is None else CANDS[~forgotten[CANDS]]
    assert sorted(items.tolist()) == sorted(expect.tolist())  # a permutation, nothing else
    assert len(set(items.tolist())) == len(items)


def test_valid_json_ranks_by_score_then_fills_in_generator_order():
    items, scores, rep = parse_ranking('{"<i9>": 3, "<i5>": 10, "1": 7}', CANDS, lookup)
    assert items[:3].tolist() == [5, 1, 9]
    assert items[3:].tolist() == [3, 7, 2]  # the rest in candidate order
    assert scores[:3].tolist() == [10, 7, 3] and np.isnan(scores[3:]).all()
    assert rep.valid == 3 and rep.filled == 3 and not rep.fallback and not rep.lenient


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "I cannot help with that.",
        "{",
        "}{",
        "{{{{",
        "null",
        "[]",
        "{}",
        '{"<i99>": 5, "42": 1}',
        '{"<i8>": 1}',
        "\x00\xff\ud7ff",
    ],
)
def test_unusable_answers_fall_back_to_candidate_order(text):
    items, _, rep = parse_ranking(text, CANDS, lookup)
    assert items.tolist() == CANDS.tolist()
    assert rep.fallback and rep.valid == 0


def test_prose_around_json_and_single_quotes():
    text = "Sure! Here is the ranking:\n```json\n{'<i2>': 0.9, '<i7>': 0.5}\n```\nEnjoy."
    items, _, rep = parse_ranking(text, CANDS, lookup)
    assert items[:2].tolist() == [2, 7] and rep.valid == 2 and rep.lenient
    check(items)


def test_truncated_json_keeps_complete_pairs():
    items, _, rep = parse_ranking('{"<i1>": 10, "<i2>": 9, "<i3', CANDS, lookup)
    assert items[:2].tolist() == [1, 2] and rep.lenient and rep.valid == 2
    check(items)


def test_unknown_not_candidate_duplicate_and_forgotten_are_dropped_and_counted():
    forgotten = np.zeros(20, dtype=bool)
    forgotten[[9, 4]] = True
    text = '{"<i1>": 9, "<i1>": 8, "<i777>": 7, "<i0>": 6, "<i9>": 10, "<i4>": 5, "<i2>": 1}'
    items, _, rep = parse_ranking(text, CANDS, lookup, forgotten)
    assert rep.duplicate == 1 and rep.unknown == 1 and rep.not_candidate == 1
    assert rep.forgotten == 2 and rep.valid == 2
    assert 9 not in items.tolist() and 4 not in items.tolist()
    assert items[:2].tolist() == [1, 2]
    check(items, forgotten)


def test_forgotten_candidates_are_removed_even_on_fallback():
    forgotten = np.zeros(20, dtype=bool)
    forgotten[[5, 2]] = True
    items, _, rep = parse_ranking("garbage", CANDS, lookup, forgotten)
    assert rep.fallback and items.tolist() == [3, 9, 1, 7]


def test_lists_and_non_numeric_scores():
    items, _, rep = parse_ranking('["<i7>", "<i3>"]', CANDS, lookup)
    assert items[:2].tolist() == [7, 3] and rep.valid == 2
    items, _, rep = parse_ranking('{"<i7>": "high", "<i3>": 2}', CANDS, lookup)
    assert items[:2].tolist() == [3, 7] and rep.valid == 2  # NaN scores rank last
    items, _, rep = parse_ranking("<i2> <i9> and also <i2>", CANDS, lookup)
    assert items[:2].tolist() == [2, 9] and rep.duplicate == 1


def test_deeply_nested_and_huge_input_do_not_raise():
    items, _, rep = parse_ranking("[" * 100_000 + "]" * 100_000, CANDS, lookup)
    check(items)
    items, _, _ = parse_ranking('{"<i1>": 1e999, "<i2>": -1e999}' * 1000, CANDS, lookup)
    check(items)


def test_empty_candidate_list():
    items, scores, rep = parse_ranking('{"<i1>": 3}', np.zeros(0, np.int64), lookup)
    assert len(items) == 0 and len(scores) == 0 and rep.fallback and rep.not_candidate == 1


def test_extract_entries_keeps_duplicate_keys_in_order():
    entries, lenient = extract_entries('{"a": 1, "a": 2, "b": 3}')
    assert entries == [("a", 1.0), ("a", 2.0), ("b", 3.0)] and not lenient


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.lists(st.booleans(), min_size=20, max_size=20))
def test_fuzz_never_raises_and_always_ranks_every_allowed_candidate(text, mask):
    forgotten = np.array(mask)
    items, scores, rep = parse_ranking(text, CANDS, lookup, forgotten)
    check(items, forgotten)
    assert len(scores) == len(items) and rep.valid + rep.filled == len(items)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(TOKENS) + ["<i999>", "x", ""]),
            st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=3)),
        ),
        max_size=12,
    )
)
def test_fuzz_json_like_answers(pairs):
    body = ", ".join(f'"{k}": {v!r}' for k, v in pairs)
    items, _, rep = parse_ranking("{" + body + "}", CANDS, lookup)
    check(items)
    assert rep.valid <= len({lookup(k) for k, _ in pairs} & set(CANDS.tolist()))
