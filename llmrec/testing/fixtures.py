"""Small datasets and workspaces for tests: cheap to build, deterministic, no download.

:func:`write_tiny_dataset` writes a 6-user, 8-item RecBole atomic dataset (attributes and item
text included); :func:`small_workspace` a 60-user, 80-item synthetic one in a fresh workspace.
The LLM builders (a tiny base LM, an adapter configuration) are in :mod:`llmrec.testing.lm`.
"""

from __future__ import annotations

from pathlib import Path

from llmrec.data.synthetic import SyntheticSpec, write_synthetic
from llmrec.workspace import Workspace

__all__ = ["small_workspace", "tiny_workspace", "write_tiny_dataset"]


def write_tiny_dataset(folder: Path, name: str = "tiny") -> Path:
    """A 6-user, 8-item atomic dataset with user attributes and item text; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    t = 0
    for u in range(6):
        for i in range(8):
            if (u + i) % 3 != 0:
                t += 1
                inter.append(f"u{u}\ti{i}\t{1 + (u * i) % 5}\t{t}")
    (folder / f"{name}.inter").write_text("\n".join(inter) + "\n")
    users = ["user_id:token\tage:token\tgender:token\toccupation:token"]
    users += [
        f"u{u}\t{20 + 5 * u}\t{'MF'[u % 2]}\t{['student', 'writer', 'other'][u % 3]}"
        for u in range(6)
    ]
    (folder / f"{name}.user").write_text("\n".join(users) + "\n")
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [
        f"i{i}\tMovie Number {i}\t{1990 + i}\t{['Drama', 'Comedy Romance'][i % 2]}"
        for i in range(8)
    ]
    (folder / f"{name}.item").write_text("\n".join(items) + "\n")
    return folder


def tiny_workspace(root: Path) -> Workspace:
    """The tiny dataset (:func:`write_tiny_dataset`) in a fresh workspace ``root/ws``."""
    return Workspace(root / "ws", dataset="tiny", data_dir=write_tiny_dataset(root / "data"))


def small_workspace(root: Path, interactions: int = 1500, seed: int = 7) -> Workspace:
    """A synthetic dataset (60 users, 80 items, attributes, item text) in a fresh workspace
    ``root/ws``."""
    data = write_synthetic(
        SyntheticSpec(interactions, users=60, items=80, seed=seed), root / "data", "syn"
    )
    return Workspace(root / "ws", dataset="syn", data_dir=data)
