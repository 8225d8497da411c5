import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.data.requests import (
    ForgetRequest,
    interactions_request,
    parse_requests,
    select_interactions,
    select_users,
    users_request,
)
from llmrec.data.retained import RetainedView
from llmrec.errors import RequestError


def test_normalisation_makes_hash_stable():
    a = ForgetRequest.from_dict({"kind": "user", "users": ["42", "21", "42"]})
    b = ForgetRequest.from_dict({"kind": "user", "users": [21, "42"]})
    assert a == b and a.content_hash == b.content_hash
    assert a.to_dict() == {"kind": "user", "users": ["21", "42"]}


def test_parse_all_kinds():
    text = "\n".join(
        [
            '{"kind": "interactions", "pairs": [["13", "56"], ["13", "100"]]}',
            '{"kind": "user", "users": ["21", "42"]}',
            '{"kind": "item", "items": ["50"]}',
            '{"kind": "attribute", "attributes": ["gender", "age"], "users": ["7"]}',
            '{"kind": "attribute", "attributes": ["gender"]}',
        ]
    )
    reqs = parse_requests(text)
    assert [r.kind for r in reqs] == ["interactions", "user", "item", "attribute", "attribute"]
    assert reqs[3].users == ("7",) and reqs[4].users is None
    assert reqs[3].attributes == ("age", "gender")


@pytest.mark.parametrize(
    "obj, msg",
    [
        ({"kind": "users", "users": ["1"]}, "kind must be one of"),
        ({"kind": "user"}, "needs a 'users'"),
        ({"kind": "user", "users": []}, "non-empty"),
        ({"kind": "interactions", "pairs": [["1"]]}, r"\[user, item\]"),
        ({"kind": "item", "items": ["1"], "extra": 1}, "unexpected field"),
        ({"kind": "item", "items": [None]}, "must be a string"),
        (["kind"], "JSON object"),
    ],
)
def test_bad_requests(obj, msg):
    with pytest.raises(RequestError, match=msg):
        ForgetRequest.from_dict(obj)


def test_validate_against_dataset(ml100k):
    ForgetRequest.from_dict({"kind": "interactions", "pairs": [["196", "242"]]}).validate(ml100k)
    with pytest.raises(RequestError, match="unknown user"):
        ForgetRequest.from_dict({"kind": "user", "users": ["99999"]}).validate(ml100k)
    with pytest.raises(RequestError, match="unknown item"):
        ForgetRequest.from_dict({"kind": "item", "items": ["0"]}).validate(ml100k)
    with pytest.raises(RequestError, match="no interaction"):
        ForgetRequest.from_dict({"kind": "interactions", "pairs": [["196", "1"]]}).validate(ml100k)
    with pytest.raises(RequestError, match="unknown user attribute"):
        ForgetRequest.from_dict({"kind": "attribute", "attributes": ["salary"]}).validate(ml100k)


def test_selection_core_edge_random(ml100k):
    act = np.bincount(ml100k.inter_user, minlength=ml100k.n_users)
    core = select_users(ml100k, 0.05, "core", seed=1)
    edge = select_users(ml100k, 0.05, "edge", seed=1)
    rnd = select_users(ml100k, 0.05, "random", seed=1)
    assert len(core) == len(edge) == len(rnd) == round(0.05 * 943)
    assert act[core].min() >= np.sort(act)[::-1][len(core) - 1]
    assert act[edge].max() <= np.sort(act)[len(edge) - 1]
    assert np.array_equal(rnd, select_users(ml100k, 0.05, "random", seed=1))
    inter = select_interactions(ml100k, 0.1, "random", seed=3)
    assert len(inter) == 10000 and len(np.unique(inter)) == 10000
    core_i = select_interactions(ml100k, 0.01, "core", seed=3)
    assert act[ml100k.inter_user[core_i]].min() >= np.median(act)


def test_retained_view_semantics(ml100k):
    ds = ml100k
    view = RetainedView.full(ds)
    u = np.array([0, 5])
    view.apply(users_request(ds, u), 1)
    assert not view.keep[np.isin(ds.inter_user, u)].any()
    assert view.forgotten_users[u].all() and view.visible_attributes(0) == {}
    rows = np.flatnonzero(ds.inter_user == 7)[:3]
    view.apply(interactions_request(ds, rows), 2)
    assert not view.keep[rows].any() and view.keep[np.flatnonzero(ds.inter_user == 7)[3:]].all()
    view.apply(ForgetRequest("item", items=("50",)), 3)
    assert not view.keep[ds.inter_item == ds.item_index("50")].any()
    view.apply(
        ForgetRequest("attribute", attributes=("gender",), users=(str(ds.user_tokens[9]),)), 4
    )
    assert "gender" not in view.visible_attributes(9) and "gender" in view.visible_attributes(10)
    assert view.version == 4


_ids = st.one_of(
    st.text(max_size=4), st.integers(-5, 5), st.none(), st.booleans(), st.floats(allow_nan=True)
)
_json = st.recursive(
    _ids,
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(["kind", "users", "items", "pairs", "attributes", "x"]), c, max_size=4
        )
    ),
    max_leaves=10,
)


@settings(max_examples=1500, deadline=None)
@given(
    obj=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["interactions", "user", "item", "attribute"])},
            optional={"users": _json, "items": _json, "pairs": _json, "attributes": _json},
        ),
    )
)
def test_request_parser_fuzz(obj):
    """Arbitrary JSON either parses to a valid request or raises RequestError."""
    try:
        reqs = parse_requests(json.dumps(obj))
    except RequestError:
        return
    for r in reqs:
        assert ForgetRequest.from_dict(json.loads(r.to_json())) == r


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=60))
def test_request_text_fuzz(text):
    try:
        parse_requests(text)
    except RequestError:
        pass


def test_a_request_has_one_canonical_form_however_it_is_built():
    """Ids in any order or repeated give the request (and content hash) a ledger round trip
    gives: the ledger finds a request again, and never stores it twice."""
    from llmrec.data.requests import ForgetRequest

    built = ForgetRequest("user", users=("55", "18", "22", "18"))
    again = ForgetRequest.from_dict(json.loads(built.to_json()))
    assert built == again and built.content_hash == again.content_hash
    assert built.users == ("18", "22", "55")
    pairs = ForgetRequest("interactions", pairs=(("b", "2"), ("a", "1"), ("b", "2")))
    assert pairs.pairs == (("a", "1"), ("b", "2"))
    assert ForgetRequest("attribute", attributes=("gender", "age")).attributes == ("age", "gender")
