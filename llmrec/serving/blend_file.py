"""The served blend's file (``adapters/blend.json``): the fit settings (:class:`BlendFit`), the
format, reading (one-line :class:`ArtifactError` for a truncated, foreign or unknown file) and
writing (registered in the ledger with its content hash). What it holds and how it is fitted:
:mod:`llmrec.serving.blend`; this module imports no pipeline, so serving reads the file without
an import cycle."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmrec.data.ledger import Ledger
from llmrec.errors import ArtifactError
from llmrec.integrity import file_sha256
from llmrec.io import atomic_write_text
from llmrec.workspace import Workspace

BLEND_FILE = "blend.json"
KIND = "served-blend"
NAME = "served-blend"
FORMAT = 1
#: prior weights searched on VALID (0: the LM alone)
BLEND_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
#: fewest users with a short history with which they are fitted their own weight
MIN_COLD_USERS = 10


@dataclass(frozen=True)
class BlendFit:
    """How the blend is fitted (recorded in the file, so that the fit can be repeated):
    the weight grid, the short-history group (at most ``cold_max`` retained train interactions,
    own weight tried with at least :data:`MIN_COLD_USERS` of them), and the serving settings of
    the pipeline whose rankings are blended (``None``: the adapters' or the recipe's)."""

    grid: tuple[float, ...] = BLEND_GRID
    cold_max: int = 10
    strategy: str = "preference"
    history: int | None = None
    n_candidates: int | None = None
    template: str | None = None
    device: str = field(default="cpu", compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("device")
        d["grid"] = [float(w) for w in self.grid]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: str = "cpu") -> BlendFit:
        known = {"grid", "cold_max", "strategy", "history", "n_candidates", "template"}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown blend fit setting(s) {', '.join(sorted(extra))}")
        return cls(
            **{**d, "grid": tuple(float(w) for w in d.get("grid", BLEND_GRID))}, device=device
        )


def blend_path(ws: Workspace) -> Path:
    """``WORKSPACE/artifacts/adapters/blend.json`` (:func:`llmrec.llm.adapters.adapters_root`'s
    folder, named here so that finding it does not import the LLM stack)."""
    return ws.artifact_path("adapters", BLEND_FILE)


def encode(record: dict[str, Any]) -> str:
    """The file's bytes: sorted keys, fixed layout (equal records give equal files)."""
    return json.dumps(record, sort_keys=True, indent=2) + "\n"


def write_blend(ws: Workspace, record: dict[str, Any], ledger: Ledger | None = None) -> Path:
    """Write ``record`` (atomically) and register it with the ledger at its version."""
    path = blend_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, encode(record))
    own = ledger is None
    led = ws.ledger() if own else ledger
    try:
        led.register_artifact(
            NAME,
            KIND,
            path,
            int(record["ledger_version"]),
            {"fit": record["fit"]},
            digest={"": file_sha256(path)},
        )
    finally:
        if own:
            led.close()
    return path


def read_blend(ws: Workspace) -> dict[str, Any] | None:
    """The blend record (``None`` when there is none); :class:`ArtifactError` (one line) for a
    truncated or unreadable file, an unknown format or one written for another dataset."""
    path = blend_path(ws)
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        float(d["blend"])
        int(d["ledger_version"])
        fit = BlendFit.from_dict(d["fit"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"served blend {path} is unreadable or truncated ({str(exc)[:120]}): re-fit it "
            "with 'llmrec adapters blend'"
        ) from None
    if d.get("format") != FORMAT:
        raise ArtifactError(f"served blend {path} has format {d.get('format')!r}, not {FORMAT}")
    if d.get("dataset") != ws.dataset.fingerprint:
        raise ArtifactError(
            f"served blend {path} was fitted on another dataset: re-fit it with "
            "'llmrec adapters blend'"
        )
    d["fit"] = fit.to_dict()
    return d
