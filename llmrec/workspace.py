"""A workspace folder: one dataset, its split, its forget ledger and every artifact built from them.

Layout::

    WORKSPACE/workspace.json   dataset name, data dir, split settings (fixed at creation)
    WORKSPACE/ledger.sqlite    the forget ledger
    WORKSPACE/artifacts/...    models, indexes, adapters; each records its ledger version
    WORKSPACE/runs/NAME-TIME/  results of one command, with config.json and versions.json
    WORKSPACE/workspaces.json  scratch workspaces a run kept (``compare --keep-workspaces``):
                               they hold user data, so ``forget`` and ``audit`` cover them
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from llmrec.data.dataset import DEFAULT_DATASET, Dataset, load_dataset
from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
from llmrec.data.split import Split, make_split
from llmrec.errors import LlmrecError
from llmrec.integrity import RUNS, WORKSPACE_FILE, relative_to_root, resolve_in
from llmrec.io import atomic_write_json, versions

DEFAULT_WORKSPACE = "llmrec-workspace"
DEFAULT_SPLIT = {"method": "random", "seed": 2020, "ratios": [0.8, 0.1, 0.1]}
# what "forgotten interaction" means for serving (docs/design.md §2.3): ``retrain`` -- its item may be
# recommended to its user again exactly when a from-scratch build would; ``suppress`` -- never
# show a user an item whose interaction they had forgotten
POLICIES = ("retrain", "suppress")
DEFAULT_POLICY = "retrain"
# how the forget runner brings a trained CF checkpoint up to date (docs/design.md §2.3): an
# unlearning method name; ``retrain`` (the default) is exact, every other method approximate
DEFAULT_CF_METHOD = "retrain"
RECOVER = "restore it from a backup, or move the workspace aside and start a new one"
KEPT = "workspaces.json"


def check_config(cfg: object, path: Path | str) -> dict:
    """Validate a ``workspace.json`` object; :class:`LlmrecError` naming the defect."""

    def bad(what: str) -> LlmrecError:
        return LlmrecError(f"{path}: corrupt workspace config ({what}); {RECOVER}")

    if not isinstance(cfg, dict):
        raise bad(f"expected a JSON object, got {type(cfg).__name__}")
    missing = {"dataset", "split"} - set(cfg)
    if missing:
        raise bad(f"missing key(s) {', '.join(sorted(missing))}")
    if not isinstance(cfg["dataset"], str) or not cfg["dataset"]:
        raise bad("'dataset' must be a non-empty string")
    if cfg.get("data_dir") is not None and not isinstance(cfg["data_dir"], str):
        raise bad("'data_dir' must be a string or null")
    split = cfg["split"]
    if not isinstance(split, dict) or split.get("method") not in ("random", "loo"):
        raise bad("'split' must be an object with method 'random' or 'loo'")
    seed = split.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise bad("split 'seed' must be an integer in [0, 2**32)")
    ratios = split.get("ratios", [0.8, 0.1, 0.1])
    if (
        not isinstance(ratios, list)
        or len(ratios) != 3
        or not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratios)
        or not all(0 <= r <= 1 for r in ratios)
    ):
        raise bad("split 'ratios' must be three numbers in [0, 1]")
    cold = split.get("cold_items", 0)
    if isinstance(cold, bool) or not isinstance(cold, (int, float)) or not 0 <= cold <= 100:
        raise bad("split 'cold_items' must be a percentage in [0, 100]")
    if cfg.get("forget_policy", DEFAULT_POLICY) not in POLICIES:
        raise bad(f"'forget_policy' must be one of {', '.join(POLICIES)}")
    method = cfg.get("cf_method", DEFAULT_CF_METHOD)
    if not isinstance(method, str) or not method:
        raise bad("'cf_method' must be a method name")
    if not isinstance(cfg.get("cf_params", {}), dict):
        raise bad("'cf_params' must be an object")
    return cfg


def _same_folder(a: str | Path, b: Path | None) -> bool:
    return b is not None and Path(a).resolve() == b.resolve()


class Workspace:
    """Open (or create) a workspace. ``dataset``/``data_dir`` must match an existing one.

    ``read_only``: open to read: nothing is written (not even ``workspace.json`` of a new
    workspace); recording a setting or a run is an error. Otherwise ``workspace.json`` is written
    once the dataset is known to load."""

    def __init__(
        self,
        root: str | Path = DEFAULT_WORKSPACE,
        dataset: str | None = None,
        data_dir: str | Path | None = None,
        split: dict | None = None,
        read_only: bool = False,
    ):
        self.read_only = read_only
        self._cf_chosen: dict[str, tuple[str, dict]] = {}
        if not str(root).strip():
            raise LlmrecError("--workspace must name a folder (got an empty path)")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise LlmrecError(f"workspace {self.root} is not a folder")
        cfg_path = self.root / WORKSPACE_FILE
        if cfg_path.exists():
            try:
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (ValueError, OSError, RecursionError) as exc:
                msg = getattr(exc, "strerror", None) or str(exc)[:200]
                raise LlmrecError(
                    f"{cfg_path}: unreadable workspace config ({msg}); {RECOVER}"
                ) from None
            check_config(cfg, cfg_path)
            self.config = cfg
            if dataset is not None and dataset != cfg["dataset"]:
                raise LlmrecError(
                    f"workspace {self.root} holds dataset {cfg['dataset']!r}, not {dataset!r}; "
                    "use another --workspace"
                )
            if data_dir is not None and not _same_folder(data_dir, self.data_dir):
                raise LlmrecError(
                    f"workspace {self.root} was created with --data-dir {self.data_dir}"
                )
            if split is not None and split != cfg["split"]:
                raise LlmrecError(
                    f"workspace {self.root} uses split {cfg['split']}; use another --workspace for {split}"
                )
            self._persisted = True
        else:
            self.config = {
                "dataset": dataset or DEFAULT_DATASET,
                "data_dir": None
                if data_dir is None
                else self.stored_path(Path(data_dir).resolve()),
                "split": split or dict(DEFAULT_SPLIT),
            }
            self._persisted = False

    def _check_writable(self) -> None:
        if self.read_only:
            raise LlmrecError(f"workspace {self.root} was opened read-only")

    def _persist(self) -> None:
        if not self._persisted and not self.read_only:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.root / WORKSPACE_FILE, self.config)
            self._persisted = True

    def stored_path(self, path: str | Path) -> str:
        """How a path is written into this workspace's files: relative to the workspace when it
        lies inside it (or inside the workspace whose run keeps this one), else absolute
        (docs/design.md §3.3)."""
        return relative_to_root(self.root, path)

    def resolve_path(self, stored: str | Path) -> Path:
        """The path a :meth:`stored_path` names, wherever the workspace lives now."""
        return resolve_in(self.root, stored)

    @property
    def data_dir(self) -> Path | None:
        """The folder of the dataset's atomic files (``None``: recbole's examples)."""
        d = self.config.get("data_dir")
        return None if d is None else self.resolve_path(d)

    @property
    def policy(self) -> str:
        """The workspace's forget policy for serving: ``retrain`` (default) or ``suppress``."""
        return self.config.get("forget_policy", DEFAULT_POLICY)

    def set_policy(self, policy: str) -> None:
        """Fix the forget policy in ``workspace.json``."""
        if policy not in POLICIES:
            raise LlmrecError(f"forget policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self._check_writable()
        self.config = {**self.config, "forget_policy": policy}
        self._persisted = False
        self._persist()

    @property
    def cf_method(self) -> str:
        """The unlearning method that brings trained CF checkpoints up to date (``retrain``)."""
        return self.config.get("cf_method", DEFAULT_CF_METHOD)

    @property
    def cf_params(self) -> dict:
        """Parameters of :attr:`cf_method` (default: the method's own)."""
        return dict(self.config.get("cf_params", {}))

    def cf_method_of(self, checkpoint: str) -> tuple[str, dict]:
        """``(method, params)`` that bring the trained checkpoint named ``checkpoint`` (e.g.
        ``model:bpr``) up to date: this process's choice for it (:meth:`use_cf_method`), else
        the workspace's."""
        chosen = self._cf_chosen.get(checkpoint)
        return chosen if chosen is not None else (self.cf_method, self.cf_params)

    @contextmanager
    def use_cf_method(self, checkpoint: str, method: str, params: dict | None = None):
        """Within the block, bring the trained checkpoint ``checkpoint`` up to date with
        ``method`` (``llmrec unlearn --method``), not the workspace's setting (unchanged)."""
        self._cf_chosen[checkpoint] = (method, dict(params or {}))
        try:
            yield self
        finally:
            del self._cf_chosen[checkpoint]

    def set_cf_method(self, method: str, params: dict | None = None) -> None:
        """Fix the CF checkpoints' update method (and its parameters) in ``workspace.json``."""
        if not isinstance(method, str) or not method:
            raise LlmrecError(f"cf method must be a method name, got {method!r}")
        self._check_writable()
        self.config = {**self.config, "cf_method": method, "cf_params": dict(params or {})}
        self._persisted = False
        self._persist()

    @cached_property
    def dataset(self) -> Dataset:
        ds = load_dataset(self.config["dataset"], self.data_dir)
        self._persist()  # only once the dataset is known to load
        return ds

    @cached_property
    def split(self) -> Split:
        s = self.config["split"]
        return make_split(
            self.dataset,
            s["method"],
            int(s["seed"]),
            tuple(s.get("ratios", (0.8, 0.1, 0.1))),
            float(s.get("cold_items", 0)),
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
        """``WORKSPACE/artifacts/<parts>`` (nothing is created: a writer makes its folder)."""
        return self.root.joinpath("artifacts", *parts)

    def new_run(self, name: str, config: dict) -> Path:
        """A fresh results folder holding the resolved config and package versions."""
        self._check_writable()
        self._persist()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = self.root / RUNS / f"{name}-{stamp}"
        run = base
        k = 1
        while run.exists():
            k += 1
            run = base.with_name(f"{base.name}-{k}")
        run.mkdir(parents=True)
        atomic_write_json(run / "config.json", {"workspace": self.config, **config})
        atomic_write_json(run / "versions.json", versions())
        return run

    @property
    def kept_path(self) -> Path:
        return self.root / KEPT

    def kept_workspaces(self) -> list[Path]:
        """Scratch workspaces a run kept inside this one (:meth:`keep_workspaces`)."""
        if not self.kept_path.exists():
            return []
        try:
            obj = json.loads(self.kept_path.read_text(encoding="utf-8"))
        except (ValueError, OSError, RecursionError) as exc:
            raise LlmrecError(
                f"{self.kept_path}: unreadable ({str(exc)[:200]}); {RECOVER}"
            ) from None
        kept = obj.get("kept") if isinstance(obj, dict) else None
        if not isinstance(kept, list) or not all(isinstance(p, str) and p for p in kept):
            raise LlmrecError(f"{self.kept_path}: 'kept' must be a list of paths; {RECOVER}")
        return [resolve_in(self.root, p) for p in kept]

    def keep_workspaces(self, paths: list[Path]) -> None:
        """Register scratch workspaces under this one, so forget and audit cover them."""
        kept = [relative_to_root(self.root, p) for p in self.kept_workspaces()]
        kept += [p for p in (relative_to_root(self.root, q) for q in paths) if p not in kept]
        atomic_write_json(self.kept_path, {"kept": kept})
