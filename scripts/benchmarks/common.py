"""What every benchmark shares: the JSON-lines output and the sub-command table's type."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: sub-command -> (configure its argument parser, run it and return the exit status)
Subcommands = dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
]


def _plain(value: object) -> object:
    """JSON form of the numpy scalars and arrays and the paths a measurement may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def emit(record: dict) -> dict:
    """Print ``record`` as one JSON line (flushed at once) and return it."""
    print(json.dumps(record, default=_plain), flush=True)
    return record
