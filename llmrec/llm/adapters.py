"""Per-shard LoRA adapters of a workspace: tuning and manifests (the ``adapters`` forget stage
of :mod:`llmrec.forget.stages.adapters` calls :func:`tune_adapters`).

Layout::

    WS/artifacts/adapters/config.json          base model, shard count, seeds, schedules,
                                               prompt contract (template, chat template, BOS)
    WS/artifacts/adapters/shard-003/            peft folder (adapter_model.safetensors, ...)
    WS/artifacts/adapters/shard-003/llmrec_shard.json   ledger version, training-data hash,
                                               base weights hash, adapter files hash

The prompt contract: prompts are rendered and encoded by :class:`PromptBuilder` (token budget
from the model's true context length, answers tokenised in context) with the template recorded
in ``config.json``; serving reads the same record, so an adapter is served the prompts it was
tuned on. The base model is a local folder or a hub id read from the local cache (never
downloaded by a forget stage). Locations are written relative to the workspace when they lie
inside it (``./artifacts/lm``; a folder elsewhere stays absolute), so a copied or moved workspace
serves and audits its own base (docs/design.md §3.3).

An adapter's *training data* is the exact token stream it is tuned on (every epoch's examples,
see :mod:`llmrec.llm.shards`) plus the base weights' hash, the template's bytes and the settings
-- never a location, so the hash is the same wherever the workspace or the base model lives. Its
sha256 is the manifest's ``data_hash``. After a forget request a shard is re-tuned from scratch
(same seed) iff that hash changed -- i.e. iff the request touched the shard's retained data -- and
otherwise left byte-identical. Either way the ledger records the version each adapter reflects.

Adapters written before this scheme (no ``format`` in their manifest: the hash named the base by
its absolute path) cannot be checked: the audit names them, and the next tuning -- ``llmrec
forget`` or ``llmrec adapters tune --force`` -- re-tunes them.

Distributed tuning (``accelerate launch``/``torchrun``, CPU gloo or GPUs), two layouts:

- ``shards``: shard ``s`` is tuned by process ``s mod world_size`` alone; each adapter is an
  independent model, so no gradient is shared and the weights are byte-identical to a
  single-process run (on the same device kind);
- ``data``: every process tunes every shard together (DDP, each takes a slice of every batch,
  gradients averaged); the weights equal the single-process ones up to float summation order.

``auto`` (the default) uses ``shards`` when there are at least as many shards as processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.data.ledger import Ledger
from llmrec.data.retained import RetainedView
from llmrec.errors import ArtifactError
from llmrec.io import atomic_write_json, read_json_if_present
from llmrec.llm.catalog import Catalog, ItemVerbalizer
from llmrec.llm.loading import (
    LoadOptions,
    base_folder,
    ensure_pad,
    load_model_config,
    load_tokenizer,
    resolve_base,
    snapshot_revision,
    weights_hash,
)
from llmrec.llm.lora import LoraSettings, TokenizedExample, tune_adapter
from llmrec.llm.prompt import PromptBuilder, UserContext, answer_text, context_limit
from llmrec.llm.shards import ExampleSettings, epoch_examples, shard_data, shard_of
from llmrec.workspace import Workspace
from prompts import default_template, load_template, template_ref

CONFIG = "config.json"
SHARD_MANIFEST = "llmrec_shard.json"
#: config and manifest format: 2 = workspace-relative locations, a location-free data hash
#: (absent, i.e. 1: absolute locations, hashed into the training data)
FORMAT = 2
OLDER = (
    "tuned by an older llmrec, which recorded the base model by its absolute path and hashed "
    "that location into the training data"
)
RETUNE = "re-tune with 'llmrec adapters tune --force'"


@dataclass
class AdapterConfig:
    """Everything that defines the adapters of a workspace (fixed when first tuned)."""

    base: str
    n_shards: int = 4
    seed: int = 2020
    template: str | None = None  # None: prompts.default_template (resolved when tuned)
    answer_items: int = 3
    device: str = "cpu"
    lora: LoraSettings = field(default_factory=LoraSettings)
    examples: ExampleSettings = field(default_factory=ExampleSettings)
    load: LoadOptions = field(default_factory=LoadOptions)
    contract: dict[str, Any] | None = None  # the prompt contract, recorded when tuned
    format: int = FORMAT  # of the config file (1: written by an older llmrec)

    def to_dict(self) -> dict[str, Any]:
        """JSON-normalised settings (what ``config.json`` holds and comparisons use)."""
        d = asdict(self)
        d["lora"] = self.lora.to_dict()
        d["examples"] = asdict(self.examples)
        d["load"] = self.load.to_dict()
        return json.loads(json.dumps(d))

    def pinned(self) -> dict[str, Any]:
        """The settings two tunings must share (no device, no derived contract)."""
        skip = ("device", "contract", "format")
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def data_settings(self) -> dict[str, Any]:
        """:meth:`pinned` without locations (base, template), for the training-data hash: the
        base enters it by its weights' hash, the template by its bytes."""
        return {k: v for k, v in self.pinned().items() if k not in ("base", "template")}

    def stored(self, ws: Workspace) -> dict[str, Any]:
        """What ``config.json`` holds: :meth:`to_dict` with workspace-relative locations."""
        return self.to_dict() | {
            "base": stored_location(ws, self.base),
            "template": stored_location(ws, self.template),
        }

    def located(self, ws: Workspace) -> AdapterConfig:
        """The config read from ``ws``'s ``config.json``, its locations resolved in ``ws``."""
        return dataclasses.replace(
            self, base=located(ws, self.base), template=located(ws, self.template)
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdapterConfig:
        d = {"format": 1, **d}
        d["lora"] = LoraSettings(**d.get("lora", {}))
        d["examples"] = ExampleSettings(**d.get("examples", {}))
        d["load"] = LoadOptions(**d.get("load", {}))
        return cls(**d)

    def resolved(self, catalog: Catalog) -> AdapterConfig:
        """Base as an absolute path (local folders) and the template named explicitly (when none
        is given: the one a toolkit-built base was adapted with, else
        :func:`prompts.default_template` for the model's item spelling)."""
        base = resolve_base(self.base)
        template = self.template
        if template is None:  # a toolkit-built base names the template it was adapted with
            from llmrec.llm.recipe import serving

            template = serving(base).template
        if template is None:
            vocab = load_tokenizer(base, self.load).get_vocab()
            template = default_template(ItemVerbalizer(catalog, vocab).single_token)
        return dataclasses.replace(self, base=base, template=template_ref(template))


def stored_location(ws: Workspace, ref: str | None) -> str | None:
    """A base model or template as written into ``ws``: a folder or file inside the workspace
    relative to it (``./``-prefixed, so it never reads as a hub id), one elsewhere absolute, a
    hub id or shipped template name as is."""
    if ref is None or not Path(ref).is_absolute():
        return ref
    rel = ws.stored_path(ref)
    return rel if Path(rel).is_absolute() or rel.startswith("..") else f"./{rel}"


def located(ws: Workspace, ref: str | None) -> str | None:
    """The absolute location a :func:`stored_location` names in ``ws`` (others as they are)."""
    if ref is None or not ref.startswith("."):
        return ref
    return os.path.abspath(ws.resolve_path(ref))


def base_problem(cfg: AdapterConfig) -> str | None:
    """Why the adapters' base model cannot be read (``None``: it can), with the remedy."""
    try:
        base_folder(cfg.base, cfg.load.revision)
    except ArtifactError as exc:
        if cfg.format < FORMAT:
            return f"{exc}; the adapters were {OLDER}: {RETUNE}"
        return str(exc)
    return None


def prompt_contract(builder: PromptBuilder) -> dict[str, Any]:
    """What serving must reproduce: template (and its file hash), chat template, BOS, budget."""
    tok = builder.tokenizer
    chat = getattr(tok, "chat_template", None)
    return {
        "template": builder.template.name,
        "template_sha256": hashlib.sha256(Path(builder.template.source).read_bytes()).hexdigest(),
        "chat_template_sha256": hashlib.sha256(str(chat).encode()).hexdigest() if chat else None,
        "bos": builder.bos_id is not None,
        "context_limit": builder.limit,
        "answer_reserve": builder.answer_reserve(),
    }


def adapter_files_hash(folder: Path) -> str:
    """sha256 over an adapter folder's peft files (everything but the llmrec manifest)."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != SHARD_MANIFEST)
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def adapters_root(ws: Workspace) -> Path:
    return ws.root / "artifacts" / "adapters"


def shard_dir(root: Path, shard: int) -> Path:
    return root / f"shard-{shard:03d}"


def load_config(ws: Workspace, root: Path | None = None) -> AdapterConfig | None:
    p = (root or adapters_root(ws)) / CONFIG
    if not p.is_file():
        return None
    return AdapterConfig.from_dict(json.loads(p.read_text())).located(ws)


def shard_manifest(folder: Path) -> dict | None:
    """The llmrec manifest of a shard adapter folder; ``None`` when it has none."""
    return read_json_if_present(folder / SHARD_MANIFEST)


class ShardTrainingData:
    """Tokenised training stream of one shard at one ledger version, and its hash."""

    def __init__(
        self,
        ws: Workspace,
        cfg: AdapterConfig,
        shard: int,
        version: int | None,
        view: RetainedView | None = None,
    ):
        ds = ws.dataset
        self.view = ws.view(version) if view is None else view
        self.shard = shard
        self.tokenizer = ensure_pad(load_tokenizer(cfg.base, cfg.load))
        model_config = load_model_config(cfg.base, cfg.load)
        catalog = Catalog.from_dataset(ds)
        self.verbalizer = ItemVerbalizer(catalog, self.tokenizer.get_vocab())
        template = load_template(cfg.template or default_template(self.verbalizer.single_token))
        self.builder = PromptBuilder(
            template,
            catalog,
            self.verbalizer,
            self.tokenizer,
            limit=context_limit(self.tokenizer, model_config),
        )
        self.contract = prompt_contract(self.builder)
        self.base_hash = weights_hash(cfg.base, cfg.load.revision)
        assignment = shard_of(ds.user_tokens, cfg.n_shards, cfg.seed)
        self.data = shard_data(ds, ws.split, self.view, assignment, shard)
        self.cfg = cfg
        self.epochs = [self._tokenize(e) for e in range(cfg.lora.epochs)]
        h = hashlib.sha256()
        h.update(json.dumps(cfg.data_settings(), sort_keys=True).encode())
        h.update(self.base_hash.encode())
        h.update(Path(template.source).read_bytes())
        for ep in self.epochs:
            for ex in ep:
                h.update(np.asarray(ex.ids, np.int64).tobytes())
                h.update(np.asarray([ex.n_answer, *ex.targets], np.int64).tobytes())
        self.hash = h.hexdigest()

    def example(self, e: Any) -> TokenizedExample:
        """One training example under the prompt contract: the prompt as served
        (:meth:`PromptBuilder.encode`), the answer tokenised in context after it; first-slot
        targets are each held-out item's first in-context token."""
        ctx = UserContext(e.user, e.attributes, e.history_items, e.history_ratings, e.candidates)
        enc = self.builder.encode(ctx)
        answer = answer_text(
            [
                self.verbalizer(int(t))
                for t in e.answer_items(self.cfg.answer_items, self.cfg.examples.answer_fill)
            ]
        )
        single = self.verbalizer.single_token
        suffixes = [answer] + ([] if single else [self.verbalizer(int(t)) + '"' for t in e.targets])
        cut, tails = self.builder.continuations(enc, suffixes)
        ids = enc.ids[:cut] + tails[0]
        if single:
            targets = self.verbalizer.token_ids[e.targets].tolist()
            seen = set(self.verbalizer.token_ids[e.history_items].tolist())
            hist = [k for k, t in enumerate(ids[:cut]) if t in seen]
            cands = self.verbalizer.token_ids[e.candidates].tolist()
        else:
            targets, hist, cands = [t[0] for t in tails[1:] if t], [], []
        return TokenizedExample(ids, len(ids) - cut, targets, cands, hist)

    def _tokenize(self, epoch: int) -> list[TokenizedExample]:
        exs = epoch_examples(self.data, self.cfg.examples, self.cfg.seed, epoch)
        out = [self.example(e) for e in exs]
        limit = self.builder.limit
        for x in out:
            if limit is not None and len(x.ids) > limit:
                raise ArtifactError(
                    f"a tuning example of shard {self.shard} has {len(x.ids)} tokens, over the "
                    f"model's {limit} positions (answer longer than the prompt contract reserves)"
                )
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "users": len(self.data.users),
            "interactions": self.data.n_interactions,
            "examples_per_epoch": [len(e) for e in self.epochs],
            "tokens": int(sum(len(x.ids) for ep in self.epochs for x in ep)),
        }


def tune_adapters(
    ws: Workspace,
    config: AdapterConfig | None = None,
    version: int | None = None,
    shards: list[int] | None = None,
    force: bool = False,
    root: Path | None = None,
    progress: Callable[[str], None] | None = None,
    register: bool = True,
    parallel: str = "auto",
    view: RetainedView | None = None,
    ledger: Ledger | None = None,
) -> dict[str, Any]:
    """Bring every shard adapter to ``version`` (default: the ledger's newest).

    ``view``: the retained view at ``version`` (default: built once from the ledger) and
    ``ledger``: an open ledger of ``ws`` (default: opened when needed), both shared by every
    shard.

    ``config`` is required the first time and must match afterwards (a different config means
    new adapters: use ``force`` or another ``root``). A shard whose training-data hash is
    unchanged is left byte-identical; others are tuned from scratch with the shard's seed.
    ``parallel``: ``auto|shards|data``, how several processes share the work (module docstring).
    """
    from accelerate import Accelerator

    root = root or adapters_root(ws)
    existing = load_config(ws, root)
    if config is None:
        if existing is None:
            raise ArtifactError(f"no adapters under {root}: run 'llmrec adapters tune' first")
        problem = base_problem(existing)
        if problem is not None:
            raise ArtifactError(f"adapters under {root}: {problem}")
        config = existing
    else:
        config = config.resolved(Catalog.from_dataset(ws.dataset))
    if existing is not None and existing.pinned() != config.pinned() and not force:
        raise ArtifactError(
            f"adapters under {root} were tuned with another configuration; pass --force to "
            "re-tune them all"
        )
    if view is None:
        with ws.ledger() if ledger is None else nullcontext(ledger) as led:
            view = led.retained_view(ws.dataset, version)
    version = view.version
    acc = Accelerator(cpu=config.device == "cpu")
    todo = list(range(config.n_shards)) if shards is None else list(shards)
    # the contract (template, chat template, BOS, budget) as the tokenizer gives it now
    probe = ShardTrainingData(ws, config, todo[0] if todo else 0, version, view)
    config = dataclasses.replace(config, contract=probe.contract, format=FORMAT)
    stored = config.stored(ws)
    if acc.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(root / CONFIG, stored)
    acc.wait_for_everyone()
    layout = resolve_parallel(parallel, acc.num_processes, len(todo))
    if layout == "shards":
        mine = [s for s in todo if s % acc.num_processes == acc.process_index]
    else:
        mine = todo
    writer = layout == "shards" or acc.is_main_process
    report: dict[str, Any] = {
        "ledger_version": version,
        "processes": acc.num_processes,
        "parallel": layout,
        "shards": {},
    }
    for s in mine:
        data = probe if s == probe.shard else ShardTrainingData(ws, config, s, version, view)
        target = shard_dir(root, s)
        old = shard_manifest(target)
        weights = target / "adapter_model.safetensors"
        if (
            not force
            and old is not None
            and old.get("format") == FORMAT  # an older manifest's hash named a location
            and old["data_hash"] == data.hash
            and weights.is_file()
        ):
            report["shards"][s] = {"retuned": False, "trained_at": old["trained_at"]}
            continue
        say = (lambda m, s=s: progress(f"[shard {s}] {m}")) if progress else None
        tmp = target.with_name(f".{target.name}.tmp")
        if writer:
            shutil.rmtree(tmp, ignore_errors=True)
        stats = tune_adapter(
            config.base,
            lambda e, d=data: d.epochs[e],
            config.lora,
            tmp,
            seed=config.seed * 1000 + s,
            pad_id=data.tokenizer.pad_token_id,
            item_token_ids=(
                data.verbalizer.token_ids.tolist() if data.verbalizer.single_token else None
            ),
            accelerator=acc,
            progress=say,
            data_parallel=layout == "data",
            load=config.load,
            base_name=stored["base"],
        )
        report["shards"][s] = {"retuned": True, "trained_at": version, "seconds": stats["seconds"]}
        if not writer:
            continue
        manifest = {
            "format": FORMAT,
            "shard": s,
            "n_shards": config.n_shards,
            "trained_at": version,
            "data_hash": data.hash,
            "base": stored["base"],
            "base_revision": config.load.revision,
            "base_snapshot": snapshot_revision(config.base, config.load.revision),
            "base_weights_sha256": data.base_hash,
            "prompt_contract": data.contract,
            "adapter_sha256": adapter_files_hash(tmp),
            **data.summary(),
            **stats,
        }
        atomic_write_json(tmp / SHARD_MANIFEST, manifest)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    acc.wait_for_everyone()
    if acc.num_processes > 1 and layout == "shards":
        from accelerate.utils import gather_object

        for part in gather_object([report["shards"]]):
            report["shards"].update(part)
    if register and acc.is_main_process:
        with ws.ledger() if ledger is None else nullcontext(ledger) as led:
            for s in todo:
                m = shard_manifest(shard_dir(root, s))
                if m is None:
                    continue
                led.register_artifact(
                    f"adapter/shard-{s:03d}",
                    "lora-adapter",
                    shard_dir(root, s),
                    version,
                    {
                        "trained_at": m["trained_at"],
                        "data_hash": m["data_hash"],
                        "users": m["users"],
                    },
                )
    report["retuned"] = sorted(s for s, r in report["shards"].items() if r["retuned"])
    report["untouched"] = sorted(s for s, r in report["shards"].items() if not r["retuned"])
    return report


PARALLEL = ("auto", "shards", "data")


def resolve_parallel(parallel: str, processes: int, n_shards: int) -> str:
    """The layout ``auto`` stands for: ``shards`` when every process gets a shard."""
    if parallel not in PARALLEL:
        raise ArtifactError(f"unknown parallel layout {parallel!r}; choose one of {PARALLEL}")
    if parallel == "auto":
        return "shards" if n_shards >= processes else "data"
    return parallel


def adapter_paths(ws: Workspace, root: Path | None = None) -> tuple[AdapterConfig, dict[str, Path]]:
    """Config and ``{"shard-000": path, ...}`` of a workspace's tuned adapters."""
    root = root or adapters_root(ws)
    cfg = load_config(ws, root)
    if cfg is None:
        raise ArtifactError(f"no adapters under {root}: run 'llmrec adapters tune' first")
    paths = {}
    for s in range(cfg.n_shards):
        d = shard_dir(root, s)
        if not (d / "adapter_model.safetensors").is_file():
            raise ArtifactError(f"adapter of shard {s} missing under {root}; re-run the tuning")
        paths[f"shard-{s:03d}"] = d
    return cfg, paths


def stale_shards(
    ws: Workspace, root: Path | None = None, ledger: Ledger | None = None
) -> list[int]:
    """Shards whose adapter does not reflect the ledger's newest version (run
    ``llmrec forget`` to finish an interrupted stage); ``ledger``: an open ledger of ``ws``."""
    cfg = load_config(ws, root)
    if cfg is None:
        return []
    with ws.ledger() if ledger is None else nullcontext(ledger) as led:
        newest = led.version
        have = {a["name"]: a["ledger_version"] for a in led.artifacts()}
    return [s for s in range(cfg.n_shards) if have.get(f"adapter/shard-{s:03d}", -1) < newest]
