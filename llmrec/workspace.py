"""A workspace folder: one dataset, its split, its forget ledger and every artifact built from them.

Layout::

    WORKSPACE/workspace.json   dataset name, data dir, split settings (fixed at creation)
    WORKSPACE/ledger.sqlite    the forget ledger
    WORKSPACE/artifacts/...    models, indexes, adapters; each records its ledger version
    WORKSPACE/runs/NAME-TIME/  results of one command, with config.json and versions.json
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from pathlib import Path

from llmrec.data.dataset import DEFAULT_DATASET, Dataset, load_dataset
from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
from llmrec.data.split import Split, make_split
from llmrec.errors import LlmrecError
from llmrec.io import atomic_write_json, versions

DEFAULT_WORKSPACE = "llmrec-workspace"
DEFAULT_SPLIT = {"method": "random", "seed": 2020, "ratios": [0.8, 0.1, 0.1]}


class Workspace:
    """Open (or create) a workspace. ``dataset``/``data_dir`` must match an existing one."""

    def __init__(
        self,
        root: str | Path = DEFAULT_WORKSPACE,
        dataset: str | None = None,
        data_dir: str | Path | None = None,
        split: dict | None = None,
    ):
        self.root = Path(root)
        cfg_path = self.root / "workspace.json"
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text())
            except (json.JSONDecodeError, OSError) as exc:
                raise LlmrecError(f"{cfg_path}: unreadable workspace config ({exc})") from None
            if dataset is not None and dataset != cfg["dataset"]:
                raise LlmrecError(
                    f"workspace {self.root} holds dataset {cfg['dataset']!r}, not {dataset!r}; "
                    "use another --workspace"
                )
            if data_dir is not None and str(Path(data_dir).resolve()) != cfg.get("data_dir"):
                raise LlmrecError(
                    f"workspace {self.root} was created with --data-dir {cfg.get('data_dir')}"
                )
            if split is not None and split != cfg["split"]:
                raise LlmrecError(
                    f"workspace {self.root} uses split {cfg['split']}; use another --workspace for {split}"
                )
            self.config = cfg
            self._persisted = True
        else:
            self.config = {
                "dataset": dataset or DEFAULT_DATASET,
                "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None,
                "split": split or dict(DEFAULT_SPLIT),
            }
            self._persisted = False

    def _persist(self) -> None:
        if not self._persisted:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.root / "workspace.json", self.config)
            self._persisted = True

    @cached_property
    def dataset(self) -> Dataset:
        ds = load_dataset(self.config["dataset"], self.config["data_dir"])
        self._persist()  # only once the dataset is known to load
        return ds

    @cached_property
    def split(self) -> Split:
        s = self.config["split"]
        return make_split(
            self.dataset, s["method"], int(s["seed"]), tuple(s.get("ratios", (0.8, 0.1, 0.1)))
        )

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.sqlite"

    def ledger(self) -> Ledger:
        return Ledger(self.ledger_path, fingerprint=self.dataset.fingerprint)

    def view(self, version: int | None = None) -> RetainedView:
        """Retained view at ``version`` (default: the ledger's newest)."""
        if not self.ledger_path.exists():
            return RetainedView.full(self.dataset)
        with self.ledger() as led:
            return led.retained_view(self.dataset, version)

    def artifact_path(self, *parts: str) -> Path:
        p = self.root.joinpath("artifacts", *parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def new_run(self, name: str, config: dict) -> Path:
        """A fresh results folder holding the resolved config and package versions."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = self.root / "runs" / f"{name}-{stamp}"
        run = base
        k = 1
        while run.exists():
            k += 1
            run = base.with_name(f"{base.name}-{k}")
        run.mkdir(parents=True)
        atomic_write_json(run / "config.json", {"workspace": self.config, **config})
        atomic_write_json(run / "versions.json", versions())
        return run
