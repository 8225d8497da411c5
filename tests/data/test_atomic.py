import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec.data.atomic import parse_header, read_atomic, write_atomic
from llmrec.data.dataset import load_dataset
from llmrec.errors import DataError


def test_ml100k_counts(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_inter) == (943, 1682, 100000)
    assert set(ml100k.user_attributes) >= {"age", "gender", "occupation"}
    assert (
        ml100k.item_text(ml100k.item_index("1"))
        == "Toy Story (1995) | Animation, Children's, Comedy"
    )
    assert ml100k.rating is not None and ml100k.timestamp is not None


def test_types_round_trip(tmp_path):
    p = tmp_path / "x.item"
    p.write_text(
        "item_id:token\ttitle:token_seq\tscore:float\tvec:float_seq\n1\ta b c\t2.5\t1 2.5\n2\t\t\t\n"
    )
    df = read_atomic(p)
    assert df["item_id"].tolist() == ["1", "2"]
    assert df["title"].tolist() == [("a", "b", "c"), ()]
    assert df["score"].iloc[0] == 2.5 and np.isnan(df["score"].iloc[1])
    assert df["vec"].tolist() == [(1.0, 2.5), ()]
    write_atomic(df, tmp_path / "y.item", df.attrs["field_types"])
    df2 = read_atomic(tmp_path / "y.item")
    assert df2["title"].tolist() == df["title"].tolist()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ("user_id\titem_id:token\n1\t2\n", "no ':type' suffix"),
        ("user_id:token\titem_id:tok\n1\t2\n", "unknown type"),
        ("user_id:token\titem_id:token\n1\t2\t3\n", "expected 2 tab-separated columns, got 3"),
        ("user_id:token\titem_id:token\trating:float\n1\t2\tfive\n", "expects a number"),
    ],
)
def test_malformed_files(tmp_path, content, message):
    p = tmp_path / "bad.inter"
    p.write_text(content)
    with pytest.raises(DataError, match=message):
        read_atomic(p)


def test_error_names_line(tmp_path):
    p = tmp_path / "bad.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t3\tx\n")
    with pytest.raises(DataError, match=r"bad.inter:3:"):
        read_atomic(p)


def test_missing_dataset(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("nothing", tmp_path)


def test_tiny_loads_with_side_tables(tiny):
    assert tiny.n_users == 6 and tiny.n_items == 8
    assert tiny.users.loc[tiny.user_index("u1"), "gender"] == "F"
    assert tiny.item_title(tiny.item_index("i3")) == "Movie Number 3"
    assert tiny.item_genres(tiny.item_index("i1")) == ["Comedy", "Romance"]


_cell = st.text(
    alphabet=st.characters(
        blacklist_characters="\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
        blacklist_categories=("Cs",),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.lists(
        st.tuples(
            st.text("abcxyz_", min_size=1, max_size=4),
            st.sampled_from(["token", "float", "token_seq", "float_seq", "bogus", ""]),
        ),
        min_size=1,
        max_size=4,
    ),
    rows=st.lists(st.lists(_cell, min_size=0, max_size=5), max_size=5),
)
def test_loader_fuzz(tmp_path_factory, header, rows):
    """Arbitrary content either loads or raises DataError — never another exception."""
    p = tmp_path_factory.mktemp("fz") / "f.inter"
    head = "\t".join(f"{n}:{t}" if t else n for n, t in header)
    p.write_text(head + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    try:
        df = read_atomic(p)
    except DataError:
        return
    assert len(df.columns) == len(header)


def test_parse_header_rejects_duplicates():
    with pytest.raises(DataError, match="duplicate"):
        parse_header("a:token\ta:float")
