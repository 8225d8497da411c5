"""Forget requests: the four kinds, their file format, validation and experiment selection.

File format (JSON object per line, or one JSON object / array)::

    {"kind": "interactions", "pairs": [["13", "56"], ["13", "100"]]}
    {"kind": "user", "users": ["21", "42"]}
    {"kind": "item", "items": ["50"]}
    {"kind": "attribute", "attributes": ["gender", "age"], "users": ["7"]}  # users optional

Ids are the dataset's tokens (strings). A request is normalised (ids as strings without
surrounding whitespace -- the dataset loader strips them the same way --, sorted, de-duplicated)
so that its content hash identifies it: the ledger stores each request once.

Files are parsed with bounds (:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_ID_LENGTH`):
hostile input is a :class:`RequestError`, never a recursion or memory failure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmrec.data.dataset import Dataset, canonical_id
from llmrec.errors import RequestError
from llmrec.io import bracket_depths, unique_keys

KINDS = ("interactions", "user", "item", "attribute")
MAX_FILE_BYTES = 256 * 2**20
MAX_DEPTH = 8  # deepest valid request: object > "pairs" list > pair list > id
MAX_ID_LENGTH = 256
_FIELDS = {
    "interactions": {"pairs"},
    "user": {"users"},
    "item": {"items"},
    "attribute": {"attributes", "users"},
}
_REQUIRED = {"interactions": "pairs", "user": "users", "item": "items", "attribute": "attributes"}


@dataclass(frozen=True)
class ForgetRequest:
    """One normalised forget request. ``payload`` holds sorted tuples of token strings."""

    kind: str
    pairs: tuple[tuple[str, str], ...] = ()
    users: tuple[str, ...] | None = None
    items: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # one canonical form however the request was built (sorted, without repeats), so the
        # content hash is the same before and after a round trip through the ledger
        canon = object.__setattr__
        canon(self, "pairs", tuple(sorted({(str(u), str(i)) for u, i in self.pairs})))
        if self.users is not None:
            canon(self, "users", tuple(sorted({str(u) for u in self.users})))
        canon(self, "items", tuple(sorted({str(i) for i in self.items})))
        canon(self, "attributes", tuple(sorted({str(a) for a in self.attributes})))

    def to_dict(self) -> dict:
        if self.kind == "interactions":
            return {"kind": self.kind, "pairs": [list(p) for p in self.pairs]}
        if self.kind == "user":
            return {"kind": self.kind, "users": list(self.users or ())}
        if self.kind == "item":
            return {"kind": self.kind, "items": list(self.items)}
        out: dict = {"kind": self.kind, "attributes": list(self.attributes)}
        if self.users is not None:
            out["users"] = list(self.users)
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the basis of the content hash."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def describe(self) -> str:
        if self.kind == "interactions":
            return f"forget {len(self.pairs)} interaction(s)"
        if self.kind == "user":
            return f"forget {len(self.users or ())} user(s)"
        if self.kind == "item":
            return f"forget {len(self.items)} item(s)"
        who = "all users" if self.users is None else f"{len(self.users)} user(s)"
        return f"forget attribute(s) {', '.join(self.attributes)} of {who}"

    @classmethod
    def from_dict(cls, obj: object) -> ForgetRequest:
        """Parse and normalise one request object; :class:`RequestError` on any defect."""
        if not isinstance(obj, dict):
            raise RequestError(f"a request must be a JSON object, got {type(obj).__name__}")
        kind = obj.get("kind")
        if kind not in KINDS:
            raise RequestError(f"request kind must be one of {', '.join(KINDS)}, got {short(kind)}")
        extra = set(obj) - _FIELDS[kind] - {"kind"}
        if extra:
            raise RequestError(
                f"{kind} request has unexpected field(s): {short(', '.join(sorted(map(str, extra))), 80)}"
            )
        req = _REQUIRED[kind]
        if req not in obj:
            raise RequestError(f"{kind} request needs a {req!r} list")
        if kind == "interactions":
            raw = _list(obj, "pairs")
            pairs = set()
            for p in raw:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise RequestError(f"each pair must be [user, item], got {short(p)}")
                pairs.add((_token(p[0], "user"), _token(p[1], "item")))
            return cls(kind, pairs=tuple(sorted(pairs)))
        if kind == "user":
            return cls(kind, users=_tokens(obj, "users"))
        if kind == "item":
            return cls(kind, items=_tokens(obj, "items"))
        attrs = _tokens(obj, "attributes")
        if "users" in obj and obj["users"] is None:
            # null and [] mean the same thing (nothing listed): both are errors, never "all"
            raise RequestError("'users' must be a non-empty list (omit it for all users)")
        users = _tokens(obj, "users") if "users" in obj else None
        return cls(kind, users=users, attributes=attrs)

    def validate(self, ds: Dataset) -> None:
        """Check every id against the dataset; unknown ids and absent pairs are errors."""
        if self.kind == "interactions":
            users = np.array([ds.user_index(u) if ds.has_user(u) else -1 for u, _ in self.pairs])
            items = np.array([ds.item_index(i) if ds.has_item(i) else -1 for _, i in self.pairs])
            for (u, i), ui, ii in zip(self.pairs, users, items):
                if ui < 0:
                    raise RequestError(f"unknown user id {short(u)} in dataset {ds.name}")
                if ii < 0:
                    raise RequestError(f"unknown item id {short(i)} in dataset {ds.name}")
            keys = users.astype(np.int64) * ds.n_items + items
            present = ds.has_pairs(keys)
            if not present.all():
                u, i = self.pairs[int(np.flatnonzero(~present)[0])]
                raise RequestError(
                    f"user {short(u)} has no interaction with item {short(i)} in {ds.name}"
                )
        for u in self.users or ():
            if not ds.has_user(u):
                raise RequestError(f"unknown user id {short(u)} in dataset {ds.name}")
        for i in self.items:
            if not ds.has_item(i):
                raise RequestError(f"unknown item id {short(i)} in dataset {ds.name}")
        for a in self.attributes:
            if a not in ds.user_attributes:
                known = ", ".join(ds.user_attributes) or "none"
                raise RequestError(f"unknown user attribute {short(a)} (dataset has: {known})")


def _list(obj: dict, key: str) -> list:
    v = obj.get(key)
    if not isinstance(v, list) or not v:
        raise RequestError(f"{key!r} must be a non-empty list")
    return v


def short(v: object, limit: int = 40) -> str:
    """``repr(v)`` cut to ``limit`` characters (error messages never quote a huge input)."""
    r = repr(v) if not isinstance(v, str) else repr(v[: limit + 1])
    return r if len(r) <= limit else r[: limit - 3] + "..."


def normalise_id(v: object, what: str = "id") -> str:
    """The canonical form of an id (:func:`~llmrec.data.dataset.canonical_id`: a string without
    surrounding whitespace, as the dataset loader, the CLI and the served log write it)."""
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise RequestError(f"{what} id must be a string (or integer), got {short(v)}")
    if isinstance(v, int) and abs(v) >= 10**MAX_ID_LENGTH:
        raise RequestError(f"{what} id is longer than {MAX_ID_LENGTH} characters")
    s = canonical_id(v)
    if not s:
        raise RequestError(f"{what} id is empty")
    if len(s) > MAX_ID_LENGTH:
        raise RequestError(f"{what} id {short(s)} is longer than {MAX_ID_LENGTH} characters")
    return s


def _token(v: object, what: str) -> str:
    return normalise_id(v, what)


def _tokens(obj: dict, key: str) -> tuple[str, ...]:
    return tuple(sorted({_token(v, key.rstrip("s")) for v in _list(obj, key)}))


def parse_requests(text: str, source: str = "<requests>") -> list[ForgetRequest]:
    """Parse a request file: JSON lines, or a single JSON object or array of objects."""
    if len(text) > MAX_FILE_BYTES:
        raise RequestError(f"{source}: larger than {MAX_FILE_BYTES >> 20} MiB; split it")
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some editors write
    stripped = text.strip()
    if not stripped:
        raise RequestError(f"{source}: no request found (empty file)")
    objs: list = []
    try:
        whole = _loads(stripped, source)
        objs = whole if isinstance(whole, list) else [whole]
    except json.JSONDecodeError:
        for n, line in enumerate(text.split("\n"), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                objs.append(_loads(line, f"{source}:{n}"))
            except json.JSONDecodeError as exc:
                raise RequestError(f"{source}:{n}: invalid JSON ({exc.msg})") from None
    if not objs:
        raise RequestError(f"{source}: no request found")
    out = []
    for k, o in enumerate(objs, start=1):
        try:
            out.append(ForgetRequest.from_dict(o))
        except RequestError as exc:
            raise RequestError(f"{source}: request {k}: {exc}") from None
    return out


def _depth_ok(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests brackets at most ``limit`` deep (strings skipped)."""
    return all(depth <= limit for _, depth in bracket_depths(text))


def _loads(text: str, where: str) -> object:
    """``json.loads`` with bounded nesting, no NaN/Infinity and bounded integer literals."""
    if ("[" in text or "{" in text) and not _depth_ok(text, MAX_DEPTH + 1):
        raise RequestError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
            object_pairs_hook=unique_keys,
        )
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"{where}: {str(exc)[:120]}") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _bounded_int(s: str) -> int:
    if len(s) > MAX_ID_LENGTH:
        raise ValueError(f"integer literal of {len(s)} digits (ids are at most {MAX_ID_LENGTH})")
    return int(s)


def load_requests(path: str | Path) -> list[ForgetRequest]:
    p = Path(path)
    if not p.is_file():
        raise RequestError(f"request file not found: {p}")
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise RequestError(f"{p}: larger than {MAX_FILE_BYTES >> 20} MiB; split it")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise RequestError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return parse_requests(text, str(p))


# ---------------------------------------------------------------- experiment selection (CURE4Rec)

SELECTIONS = ("random", "core", "edge")


def _count(fraction: float, total: int) -> int:
    if not 0 < fraction <= 1:
        raise RequestError(f"forget fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * total)))


def select_users(
    ds: Dataset,
    fraction: float,
    how: str = "random",
    seed: int = 2020,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Internal indices of ``fraction`` of the users: random, core (most active) or edge (least).

    Activity counts the interactions in ``mask`` (default: all). Ties are broken by a seeded
    random permutation, so the choice is reproducible.
    """
    if how not in SELECTIONS:
        raise RequestError(f"selection must be one of {', '.join(SELECTIONS)}, got {how!r}")
    rng = np.random.default_rng(seed)
    users = ds.inter_user if mask is None else ds.inter_user[mask]
    activity = np.bincount(users, minlength=ds.n_users)
    eligible = np.flatnonzero(activity > 0)
    k = _count(fraction, len(eligible))
    perm = rng.permutation(eligible)
    if how == "random":
        return np.sort(perm[:k])
    act = activity[perm]
    order = np.argsort(-act if how == "core" else act, kind="stable")
    return np.sort(perm[order[:k]])


def select_interactions(
    ds: Dataset,
    fraction: float,
    how: str = "random",
    seed: int = 2020,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``fraction`` of the interactions in ``mask``.

    ``random``: uniform; ``core`` / ``edge``: drawn uniformly from the interactions of the most /
    least active users, taking users in activity order until the budget is filled.
    """
    if how not in SELECTIONS:
        raise RequestError(f"selection must be one of {', '.join(SELECTIONS)}, got {how!r}")
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(mask) if mask is not None else np.arange(ds.n_inter)
    k = _count(fraction, len(pool))
    if how == "random":
        return np.sort(rng.choice(pool, size=k, replace=False))
    activity = np.bincount(ds.inter_user[pool], minlength=ds.n_users)
    tiebreak = rng.random(ds.n_users)
    user_order = np.lexsort((tiebreak, -activity if how == "core" else activity))
    rank_of_user = np.empty(ds.n_users, dtype=np.int64)
    rank_of_user[user_order] = np.arange(ds.n_users)
    order = np.lexsort((rng.random(len(pool)), rank_of_user[ds.inter_user[pool]]))
    return np.sort(pool[order[:k]])


def users_request(ds: Dataset, users: np.ndarray) -> ForgetRequest:
    return ForgetRequest("user", users=tuple(sorted(str(ds.user_tokens[u]) for u in users)))


def interactions_request(ds: Dataset, inter_idx: np.ndarray) -> ForgetRequest:
    pairs = {
        (str(ds.user_tokens[ds.inter_user[i]]), str(ds.item_tokens[ds.inter_item[i]]))
        for i in inter_idx
    }
    return ForgetRequest("interactions", pairs=tuple(sorted(pairs)))


def user_interactions_request(ds: Dataset, users: np.ndarray) -> ForgetRequest:
    """All interactions of ``users`` as an interactions request (users stay, history goes)."""
    return interactions_request(ds, np.flatnonzero(np.isin(ds.inter_user, users)))
