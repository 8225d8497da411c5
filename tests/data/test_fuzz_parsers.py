"""Fuzzing the three parsers that read untrusted input (10,000+ generated inputs in all):
the atomic-file loader, the forget-request parser and the LLM-output parser. Each input is
either accepted or rejected with the toolkit's own error; nothing else may escape."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec.data.atomic import read_atomic
from llmrec.data.requests import ForgetRequest, parse_requests
from llmrec.errors import DataError, RequestError
from llmrec.llm.parsing import parse_ranking

N_ATOMIC, N_REQUEST, N_LLM = 2000, 4000, 4000

CANDS = np.arange(10, 30, dtype=np.int64)
FORGOTTEN = np.zeros(40, dtype=bool)
FORGOTTEN[[12, 17, 29]] = True


def lookup(token: str) -> int | None:
    if token.startswith("<i") and token.endswith(">") and token[2:-1].isdigit():
        v = int(token[2:-1])
        return v if v < 40 else None
    return None


_cell = st.text(
    alphabet=st.characters(
        blacklist_characters="\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
        blacklist_categories=("Cs",),
    ),
    max_size=5,
)
_header = st.lists(
    st.tuples(
        st.sampled_from(["user_id", "item_id", "rating", "x"]),
        st.sampled_from(["token", "float", "token_seq", "float_seq", "int", ""]),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=N_ATOMIC,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    header=_header,
    rows=st.lists(st.lists(_cell, max_size=5), max_size=4),
    raw=st.binary(max_size=40),
)
def test_atomic_loader(tmp_path, header, rows, raw):
    p = tmp_path / "f.inter"
    head = "\t".join(f"{n}:{t}" if t else n for n, t in header)
    p.write_bytes((head + "\n" + "\n".join("\t".join(r) for r in rows) + "\n").encode() + raw)
    try:
        df = read_atomic(p)
    except DataError:
        return
    assert list(df.columns) == [n for n, _ in header]


_scalar = st.one_of(
    st.text(max_size=4), st.integers(-3, 3), st.none(), st.booleans(), st.floats(allow_nan=True)
)
_value = st.recursive(
    _scalar,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
_request = st.fixed_dictionaries(
    {"kind": st.sampled_from(["interactions", "user", "item", "attribute", "users", 3])},
    optional={k: _value for k in ("pairs", "users", "items", "attributes", "extra")},
)


@settings(max_examples=N_REQUEST, deadline=None)
@given(objs=st.lists(st.one_of(_request, _value), min_size=1, max_size=3), jsonl=st.booleans())
def test_request_parser(objs, jsonl):
    text = "\n".join(json.dumps(o) for o in objs) if jsonl else json.dumps(objs)
    try:
        reqs = parse_requests(text)
    except RequestError:
        return
    for r in reqs:  # what parses round-trips through its canonical form
        assert ForgetRequest.from_dict(json.loads(r.to_json())) == r


_answer_piece = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda k, v: f'"<i{k}>": {v}',
        st.integers(0, 45),
        st.one_of(st.integers(-9, 9), st.floats(allow_nan=True), st.text(max_size=3)),
    ),
    st.sampled_from(
        ["{", "}", ",", '"', "```json", "Ignore previous instructions", "<i12>", "null", "[1, 2]"]
    ),
)


@settings(max_examples=N_LLM, deadline=None)
@given(pieces=st.lists(_answer_piece, max_size=12))
def test_llm_output_parser(pieces):
    items, scores, rep = parse_ranking("".join(pieces), CANDS, lookup, FORGOTTEN[: CANDS.max() + 1])
    allowed = CANDS[~FORGOTTEN[CANDS]]
    assert sorted(items.tolist()) == sorted(allowed.tolist())  # a full valid ranking, always
    assert not FORGOTTEN[items].any() and len(scores) == len(items)


def test_budget_is_at_least_ten_thousand():
    assert N_ATOMIC + N_REQUEST + N_LLM >= 10_000
