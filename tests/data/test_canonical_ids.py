"""One canonical id form at every boundary, and inputs whose meaning would be a guess rejected
(issue 27, items 2, 5, 6 and 13): request files, atomic files, the CLI's options."""

from __future__ import annotations

import argparse

import pytest

from llmrec.cli.common import float_in, positive_int
from llmrec.data.dataset import canonical_id, load_dataset
from llmrec.data.requests import load_requests, parse_requests
from llmrec.errors import ArtifactError, DataError, RequestError
from llmrec.llm.loading import LoadOptions


@pytest.mark.parametrize("raw", ["2\r", " 2", "2 ", "\t2\n", 2, 2.0])
def test_canonical_id(raw):
    assert canonical_id(raw) == "2"


def test_duplicate_json_keys_are_rejected_not_resolved():
    with pytest.raises(RequestError, match="duplicate key 'users'"):
        parse_requests('{"kind":"user","users":["1"],"users":["2"]}')
    with pytest.raises(RequestError, match="duplicate key 'kind'"):
        parse_requests('{"kind":"user","kind":"item","items":["1"]}\n{"kind":"item","items":["2"]}')


def test_request_ids_are_canonical_and_a_bom_is_accepted(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"kind": "user", "users": ["2\\r", " 4", 7]}\r\n')
    (req,) = load_requests(p)
    assert req.users == ("2", "4", "7")


@pytest.mark.parametrize("users", ["null", "[]"])
def test_attribute_users_null_and_empty_are_the_same_error(users):
    with pytest.raises(RequestError, match="non-empty list"):
        parse_requests(f'{{"kind": "attribute", "attributes": ["age"], "users": {users}}}')
    (all_users,) = parse_requests('{"kind": "attribute", "attributes": ["age"]}')
    assert all_users.users is None


def _write(folder, inter: str, user: str | None = None, item: str | None = None, bom=False):
    folder.mkdir(parents=True, exist_ok=True)
    pre = "\ufeff" if bom else ""
    (folder / "d.inter").write_text(pre + inter, encoding="utf-8")
    if user is not None:
        (folder / "d.user").write_text(user, encoding="utf-8")
    if item is not None:
        (folder / "d.item").write_text(item, encoding="utf-8")
    return folder


def test_float_typed_ids_agree_with_the_user_file(tmp_path):
    """``user_id:float`` makes 51.0, the ``.user`` file's token 51: one user, not two."""
    inter = "user_id:float\titem_id:token\trating:float\n51\ta\t3\n51.0\tb\t4\n52\ta\t5\n"
    user = "user_id:token\tage:token\n51\t30\n52\t40\n"
    ds = load_dataset("d", _write(tmp_path / "d", inter, user))
    assert sorted(ds.user_tokens.tolist()) == ["51", "52"]
    assert ds.n_users == 2 and ds.has_user("51") and ds.has_user(" 51")
    (req,) = parse_requests('{"kind": "user", "users": ["51"]}')
    req.validate(ds)


def test_bom_and_line_separators_in_atomic_files(tmp_path):
    inter = "user_id:token\titem_id:token\trating:float\nu\ta\t3\nu\tb\t4\n"
    item = "item_id:token\tmovie_title:token_seq\na\tOne\u2028Two\x0cThree\nb\tFour\r\n"
    ds = load_dataset("d", _write(tmp_path / "d", inter, item=item, bom=True))
    assert ds.n_inter == 2 and ds.n_items == 2
    assert ds.item_text(ds.item_index("a")) == "One Two Three"  # one row, words kept
    assert ds.item_text(ds.item_index("b")) == "Four"


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_ratings_are_rejected(tmp_path, bad):
    inter = f"user_id:token\titem_id:token\trating:float\nu\ta\t3\nu\tb\t{bad}\n"
    with pytest.raises(DataError, match="d.inter:3: field 'rating' expects a finite number"):
        load_dataset("d", _write(tmp_path / "d", inter))


def test_ratings_are_given_for_every_row_or_none(tmp_path):
    some = "user_id:token\titem_id:token\trating:float\nu\ta\t3\nu\tb\t\n"
    with pytest.raises(DataError, match="data row 2 has no 'rating' while others have one"):
        load_dataset("d", _write(tmp_path / "s", some))
    none = "user_id:token\titem_id:token\trating:float\nu\ta\t\nu\tb\t\n"
    assert load_dataset("d", _write(tmp_path / "n", none)).rating is None


def test_conflicting_duplicate_rows_are_rejected(tmp_path):
    same = "user_id:token\titem_id:token\trating:float\nu\ta\t3\nv\ta\t1\nu\ta\t3\n"
    assert load_dataset("d", _write(tmp_path / "s", same)).n_inter == 3  # a repeat, not a conflict
    inter = "user_id:token\titem_id:token\trating:float\nu\ta\t3\nv\ta\t1\nu\ta\t5\n"
    with pytest.raises(DataError, match=r"data rows 1 and 3 rate the pair \(u, a\) differently"):
        load_dataset("d", _write(tmp_path / "c", inter))


@pytest.mark.parametrize("text", ["١٠", "１２３", "1_0", "0x10", "1e3", "²"])
def test_integer_options_take_ascii_digits_only(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)
    assert positive_int(" 12 ") == 12


@pytest.mark.parametrize("text", ["١٫٥", "１.5", "1_0.5", "nan", "inf", "0x1p3"])
def test_float_options_take_ascii_numbers_only(text):
    with pytest.raises(argparse.ArgumentTypeError):
        float_in()(text)
    assert float_in()("-1.5e-3") == -1.5e-3 and float_in()(".5") == 0.5


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"device_map": "{}"}, "unknown device map"),
        ({"device_map": "cuda:x"}, "unknown device map"),
        ({"attn_implementation": "bogus"}, "unknown attention implementation"),
    ],
)
def test_load_options_are_checked_before_loading(kw, message):
    with pytest.raises(ArtifactError, match=message):
        LoadOptions(**kw)
    assert LoadOptions(device_map="cuda:1", attn_implementation="sdpa").device_map == "cuda:1"
