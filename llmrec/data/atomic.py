"""RecBole atomic files: ``NAME.inter``, ``NAME.user``, ``NAME.item``.

Each file is tab-separated; the header names every column ``field:type`` with type one of
``token``, ``token_seq``, ``float``, ``float_seq`` (RecBole's convention). ``token_seq`` and
``float_seq`` values are space-separated. Tokens are kept as strings, floats as float64,
sequences as tuples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.errors import DataError

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def parse_header(line: str, path: Path | str = "<header>") -> list[tuple[str, str]]:
    """Split an atomic header into ``(field, type)`` pairs, validating every type."""
    fields = []
    cols = line.rstrip("\r\n").split("\t")
    if not line.strip():
        raise DataError(f"{path}: empty header line")
    for col in cols:
        name, sep, ftype = col.rpartition(":")
        if not sep or not name:
            raise DataError(f"{path}: header column {col!r} has no ':type' suffix")
        if ftype not in FIELD_TYPES:
            raise DataError(
                f"{path}: header column {col!r} has unknown type {ftype!r} "
                f"(expected one of {', '.join(FIELD_TYPES)})"
            )
        fields.append((name, ftype))
    names = [n for n, _ in fields]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate field names in header")
    return fields


def _to_float(value: str, path: Path | str, lineno: int, field: str) -> float:
    if value == "":
        return float("nan")
    try:
        return float(value)
    except ValueError:
        raise DataError(
            f"{path}:{lineno}: field {field!r} expects a number, got {value!r}"
        ) from None


def read_atomic(path: Path | str) -> pd.DataFrame:
    """Read one atomic file into a DataFrame whose columns are the field names.

    Raises :class:`DataError` with the file and line for any malformed content.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"atomic file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the header
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    # rows end at "\n" (or "\r\n") only: U+2028, form feeds and the like are text in a title
    lines = [ln.removesuffix("\r") for ln in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise DataError(f"{path}: empty file (expected a 'field:type' header)")
    fields = parse_header(lines[0], path)
    ncol = len(fields)
    rows = [ln.split("\t") if ncol > 1 else [ln] for ln in lines[1:] if ln != ""]
    if ncol > 1:
        # tabs inside a single line would break the column count; validate all rows at once
        for i, r in enumerate(rows):
            if len(r) != ncol:
                lineno = _lineno(lines, i)
                raise DataError(
                    f"{path}:{lineno}: expected {ncol} tab-separated columns, got {len(r)}"
                )
    columns: dict[str, object] = {}
    for j, (name, ftype) in enumerate(fields):
        raw = [r[j] for r in rows]
        if ftype == "token":
            columns[name] = np.array(raw, dtype=object)
        elif ftype == "float":
            try:
                values = np.array([float(v) if v != "" else np.nan for v in raw])
            except ValueError:
                bad = next(i for i, v in enumerate(raw) if not _is_float(v))
                _to_float(raw[bad], path, _lineno(lines, bad), name)
            # an empty cell is a missing value; a written nan or inf means nothing
            odd = ~np.isfinite(values) & np.array([v != "" for v in raw], dtype=bool)
            if odd.any():
                bad = int(np.flatnonzero(odd)[0])
                raise DataError(
                    f"{path}:{_lineno(lines, bad)}: field {name!r} expects a finite number, "
                    f"got {raw[bad][:20]!r}"
                )
            columns[name] = values
        elif ftype == "token_seq":
            columns[name] = [tuple(v.split()) for v in raw]
        else:  # float_seq
            columns[name] = [
                tuple(_to_float(x, path, _lineno(lines, i), name) for x in v.split())
                for i, v in enumerate(raw)
            ]
    df = pd.DataFrame(columns, columns=[n for n, _ in fields])
    df.attrs["field_types"] = dict(fields)
    return df


def _is_float(v: str) -> bool:
    if v == "":
        return True
    try:
        float(v)
    except ValueError:
        return False
    return True


def _lineno(lines: list[str], row: int) -> int:
    """1-based file line of data row ``row`` (blank lines are skipped when reading)."""
    seen = -1
    for k, ln in enumerate(lines[1:], start=2):
        if ln != "":
            seen += 1
            if seen == row:
                return k
    return len(lines)


def write_atomic(df: pd.DataFrame, path: Path | str, field_types: dict[str, str]) -> None:
    """Write ``df`` as an atomic file with the given ``field -> type`` header."""
    path = Path(path)
    header = "\t".join(f"{c}:{field_types[c]}" for c in df.columns)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(header + "\n")
        for row in df.itertuples(index=False):
            out = []
            for c, v in zip(df.columns, row):
                t = field_types[c]
                if t.endswith("_seq"):
                    out.append(" ".join(str(x) for x in v))
                elif t == "float":
                    out.append(repr(float(v)) if not pd.isna(v) else "")
                else:
                    out.append(str(v))
            fh.write("\t".join(out) + "\n")
