"""Robust parsing of a model's ``{item_id: score}`` answer into a valid ranking.

Whatever the model wrote -- valid JSON, JSON inside prose, truncated or broken JSON, a bare list
of ids, nothing at all -- :func:`parse_ranking` returns a ranking of the candidate list and never
raises. Entries are validated against the candidates; unknown ids, items outside the candidate
list, duplicates and forgotten items are dropped and counted. Candidates the answer did not rank
follow in the candidate model's order; an answer with no valid entry is a *fallback* (the
ranking is the generator's order) and is flagged so callers can count it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from llmrec.io import bracket_depths

# "key": value  |  'key': value  |  key: value   (value: a number, or anything up to , or })
_PAIR = re.compile(
    r"""["']?(?P<key>[^"'{}\[\]:,\s]+)["']?\s*:\s*(?P<val>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[^,}\n]*)"""
)
_LIST_ITEM = re.compile(r"""["']([^"']+)["']|(<i[^<>\s]+>)""")


@dataclass
class ParseReport:
    """What happened to one answer."""

    entries: int = 0
    valid: int = 0
    unknown: int = 0
    not_candidate: int = 0
    duplicate: int = 0
    forgotten: int = 0
    lenient: bool = False
    fallback: bool = False
    filled: int = 0
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _balanced_object(text: str) -> str | None:
    """The first ``{...}`` with balanced braces (strings respected), or ``None``."""
    start = text.find("{")
    if start < 0:
        return None
    for k, depth in bracket_depths(text, "{", "}", start):
        if depth == 0:
            return text[start : k + 1]
    return None


def _to_float(v: object) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip().strip("\"'"))
    except ValueError:
        return math.nan


def extract_entries(text: str) -> tuple[list[tuple[str, float]], bool]:
    """``[(key, score), ...]`` in written order and whether lenient extraction was needed.

    Tries strict JSON on the first balanced object (duplicate keys kept), then a JSON list of
    ids, then a regex over ``key: value`` pairs, then bare quoted ids / item tokens.
    """
    obj = _balanced_object(text)
    if obj is not None:
        try:
            pairs = json.loads(obj, object_pairs_hook=lambda kv: kv)
            if isinstance(pairs, list):
                return [(str(k), _to_float(v)) for k, v in pairs], False
        except (json.JSONDecodeError, ValueError, TypeError, RecursionError):
            pass
    lb = text.find("[")
    if lb >= 0 and (obj is None or lb < text.find("{")):
        rb = text.find("]", lb)
        if rb > lb:
            try:
                arr = json.loads(text[lb : rb + 1])
                if isinstance(arr, list) and arr:
                    n = len(arr)
                    return [(str(k), float(n - j)) for j, k in enumerate(arr)], False
            except (json.JSONDecodeError, ValueError, RecursionError):
                pass
    found = [(m.group("key"), _to_float(m.group("val"))) for m in _PAIR.finditer(text)]
    if found:
        return found, True
    ids = [m.group(1) or m.group(2) for m in _LIST_ITEM.finditer(text)]
    return [(k, float(len(ids) - j)) for j, k in enumerate(ids)], True


def parse_ranking(
    text: str | None,
    candidates: np.ndarray,
    lookup: Callable[[str], int | None],
    forgotten: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, ParseReport]:
    """Rank ``candidates`` by the scores in ``text``; never raises.

    Args:
        text: the model's answer (including the opening ``{"`` of the prompt, if any).
        candidates: item indices in the candidate model's order.
        lookup: written id -> item index (``None`` if unknown).
        forgotten: bool mask over items that must never be output.

    Returns:
        ``(items, scores, report)``: every non-forgotten candidate once, the model's ranked
        entries first (by score, ties in written order) then the rest in generator order;
        ``scores`` holds the model's score for ranked entries and ``nan`` for filled ones.
    """
    rep = ParseReport()
    cands = np.asarray(candidates, dtype=np.int64)
    if forgotten is not None and len(cands):
        cands = cands[~np.asarray(forgotten, dtype=bool)[cands]]
    cand_set = set(cands.tolist())
    chosen: list[tuple[int, float, int]] = []
    try:
        entries, rep.lenient = extract_entries(text or "")
        rep.entries = len(entries)
        seen: set[int] = set()
        for pos, (key, score) in enumerate(entries):
            idx = lookup(key)
            if idx is None:
                rep.unknown += 1
            elif forgotten is not None and 0 <= idx < len(forgotten) and forgotten[idx]:
                rep.forgotten += 1
            elif idx not in cand_set:
                rep.not_candidate += 1
            elif idx in seen:
                rep.duplicate += 1
            else:
                seen.add(idx)
                chosen.append((idx, score, pos))
    except Exception as exc:  # a parser must never take the pipeline down
        rep.error = f"{type(exc).__name__}: {exc}"
        chosen = []
    chosen.sort(key=lambda t: (-(t[1] if not math.isnan(t[1]) else -math.inf), t[2]))
    rep.valid = len(chosen)
    rep.fallback = rep.valid == 0
    head = [c[0] for c in chosen]
    head_set = set(head)
    tail = [int(i) for i in cands if int(i) not in head_set]
    rep.filled = len(tail)
    items = np.array(head + tail, dtype=np.int64)
    scores = np.array([c[1] for c in chosen] + [math.nan] * len(tail), dtype=np.float64)
    return items, scores, rep


_ITEMISH = re.compile(r"""<i[^<>\s]+>|["'][^"'{}\n]{1,64}["']""")


def scrub(text: str, lookup: Callable[[str], int | None], forgotten: np.ndarray) -> str:
    """``text`` with every spelled forgotten item replaced by ``[forgotten]`` (raw answers are
    kept for inspection, and must not show a forgotten id either)."""

    def repl(m: re.Match) -> str:
        idx = lookup(m.group(0))
        if idx is not None and 0 <= idx < len(forgotten) and forgotten[idx]:
            q = m.group(0)[0] if m.group(0)[0] in "\"'" else ""
            return f"{q}[forgotten]{q}"
        return m.group(0)

    try:
        return _ITEMISH.sub(repl, text)
    except Exception:  # never let inspection text break serving
        return ""
