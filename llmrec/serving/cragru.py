"""CRAGRU serving: forget-aware retrieval + LLM regeneration for a user.

Serving (:class:`CragruPipeline`): for a user, the retrieval store gives the retained history
selected by a CRAGRU strategy, the visible profile and the candidate list (exactly unlearnable
co-occurrence generator); the prompt is rendered with a template; the user's shard adapter on
the base LM regenerates the ranking in one of four modes, run by a serving backend
(:mod:`llmrec.llm.backends`, Hugging Face + peft by default).

Blending (likelihood mode): the adapters are tuned as a residual on top of the candidate
generator's order (``logit + beta * prior``, prior ``-log2(2 + rank)``), so the served score is
``log p_LM(item) + blend * prior``; ``blend = 0`` is the pure LM ranking. ``blend`` is fitted
on VALID (grid search, :mod:`llmrec.serving.blend`: a forget-stage artifact, re-fitted by
``llmrec forget``) and stored (``adapters/blend.json``) as the served default; without it
``blend = beta``. Users with at most 10 retained train interactions get their own weight, tuned
on their own VALID part (:class:`ServedBlend`): for them the candidate order is popularity and
the LM's reading of the profile and titles is all there is.

The forget scenario that evaluates this serving is :mod:`llmrec.experiments.cragru_scenario`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.errors import ArtifactError, DataError
from llmrec.llm.backends import (
    DEFAULT_BACKEND,
    RANK_MODES,
    BackendSpec,
    Ranking,
    backend_names,
    checked_rank,
    create_backend,
)
from llmrec.llm.catalog import Catalog
from llmrec.llm.loading import LoadOptions, resolve_base, weights_hash
from llmrec.llm.lora import rank_prior
from llmrec.llm.prompt import UserContext
from llmrec.llm.recipe import serving
from llmrec.serving.blend_file import BLEND_GRID
from llmrec.serving.served_log import suppress_filter
from llmrec.workspace import Workspace

LM_DIR = ("artifacts", "lm")


def default_lm_dir(ws: Workspace) -> Path:
    """Where ``llmrec build-lm`` puts the workspace's base model."""
    return ws.root.joinpath(*LM_DIR)


#: base models named instead of a folder (``--model`` / ``--llm-base``), each the ``--init`` of
#: ``llmrec build-lm`` that makes it
NAMED_BASES = ("smollm2",)


def named_base(ws: Workspace, name: str) -> Path:
    """The workspace's built base LM when it is the named one (``smollm2``: the folder
    ``llmrec build-lm --init smollm2`` wrote); :class:`ArtifactError` saying how to build it
    otherwise."""
    from llmrec.llm.lm_builder import read_manifest

    if name not in NAMED_BASES:
        raise ArtifactError(f"unknown base {name!r}: one of {', '.join(NAMED_BASES)} or a folder")
    folder = default_lm_dir(ws)
    try:
        init = (read_manifest(folder) or {}).get("init")
    except ValueError:
        init = None
    if init != name:
        raise ArtifactError(
            f"the workspace's base LM is not {name} ({folder}: "
            f"{init or 'none built'}): run 'llmrec build-lm --init {name}' first"
        )
    return folder


@dataclass
class CragruOptions:
    """Serving options.

    ``model``: hub id or folder (default: the base the workspace's adapters were tuned on, else
    the workspace's built LM). ``adapters``: ``True`` the workspace's adapters, ``False`` (or
    ``"none"``) the base model alone, a folder: the adapters tuned there (named explicitly, they
    may be served with another template or base). ``template`` and ``n_candidates`` default to
    the adapters' own (the list length they were tuned on), else to the base model's recipe
    (:func:`llmrec.llm.recipe.serving`), which also sets the default history budget. ``load``:
    dtype, device map, attention implementation, remote code of the base. ``backend``: the
    serving backend (:func:`llmrec.llm.backends.backend_names`) and ``backend_options`` what
    only that backend understands.
    ``candidates``: the candidate list served (``ease``, ``text``, ``hybrid``; default: the
    retrieval store's, :mod:`retrieval.hybrid`).
    """

    model: str | None = None
    adapters: bool | str = True
    template: str | None = None
    strategy: str = "preference"
    history: int | None = None
    n_candidates: int | None = None
    top_k: int = 10
    batch_size: int = 32
    device: str = "cpu"
    blend: float | None = None
    scope: str = "candidates"
    load: LoadOptions | None = None
    backend: str = DEFAULT_BACKEND
    backend_options: dict[str, Any] = field(default_factory=dict)
    candidates: str | None = None  # candidate source (retrieval.hybrid.SOURCES); None: store's


def choose_blend(
    valid_score: Callable[[float], float], grid: Sequence[float] = BLEND_GRID
) -> tuple[float, dict[float, float]]:
    """The weight of ``grid`` whose blended lists score best on VALID (``valid_score(w)``, e.g.
    NDCG@10), the smallest on ties, and the whole curve."""
    curve = {float(w): float(valid_score(float(w))) for w in grid}
    best = max(curve, key=lambda w: (curve[w], -w))
    return best, curve


#: a user group keeps its own VALID-tuned weight only when, on its VALID users, that weight beats
#: the common one by a paired t-test at this level: tuned on a few dozen users, the group's
#: argmax alone is mostly noise (docs/default_lm.md)
GROUP_BLEND_ALPHA = 0.05


def group_weight(
    own: float,
    common: float,
    own_scores: np.ndarray,
    common_scores: np.ndarray,
    alpha: float = GROUP_BLEND_ALPHA,
) -> tuple[float, dict[str, float]]:
    """The weight a user group is served: ``own`` (tuned on its VALID part) when the group's
    per-user VALID scores under it beat those under ``common`` (same users, same order) with a
    paired t-test p below ``alpha``, else ``common``; and the test's mean gain and p-value."""
    from llmrec.evaluation.paired import paired_difference

    test = paired_difference(own_scores, common_scores)
    keep = own != common and test["mean_diff"] > 0 and test["t_p_value"] < alpha
    return (own if keep else common), {"mean_diff": test["mean_diff"], "p": test["t_p_value"]}


@dataclass(frozen=True)
class ServedBlend:
    """The served prior weight: ``weight`` for every user, or ``cold_weight`` for users with at
    most ``cold_max`` retained train interactions (both tuned on VALID), where the LM's reading
    of profile and titles should matter most."""

    weight: float
    cold_weight: float | None = None
    cold_max: int = 10

    def for_history(self, n_train: int) -> float:
        """The weight of a user with ``n_train`` retained train interactions."""
        if self.cold_weight is not None and n_train <= self.cold_max:
            return self.cold_weight
        return self.weight


def load_blend(ws: Workspace) -> ServedBlend | None:
    """The served blend fitted in the workspace (:mod:`llmrec.serving.blend`), ``None`` if
    there is none; :class:`ArtifactError` for a truncated, foreign or unknown file."""
    from llmrec.serving.blend_file import read_blend

    d = read_blend(ws)
    if d is None:
        return None
    cold = d.get("cold_users") or {}
    return ServedBlend(
        float(d["blend"]),
        None if "blend" not in cold else float(cold["blend"]),
        int(cold.get("max_train", 10)),
    )


def blend_version(ws: Workspace) -> int | None:
    """The ledger version the workspace's served blend reflects (``None``: no blend)."""
    from llmrec.serving.blend_file import read_blend

    d = read_blend(ws)
    return None if d is None else int(d["ledger_version"])


def blend_ranking(r: Ranking, candidates: np.ndarray, weight: float) -> Ranking:
    """Re-sort a likelihood ranking by ``score + weight * prior(rank in candidates)``."""
    if weight == 0 or r.mode != "likelihood" or not len(r.items):
        return r
    rank = {int(c): k for k, c in enumerate(candidates)}
    prior = rank_prior(len(candidates))
    pos = np.array([rank[int(i)] for i in r.items])
    score = r.scores + weight * prior[pos]
    order = np.lexsort((pos, -score))
    return Ranking(
        r.user,
        r.items[order],
        score[order],
        r.mode,
        r.fallback,
        r.report,
        r.text,
        {**r.extra, "blend": weight},
    )


class CragruPipeline:
    """Serve regenerated rankings from a workspace's store, base model and adapters, under the
    prompt contract the adapters were tuned with (template, chat template, BOS, budget)."""

    def __init__(
        self,
        ws: Workspace,
        options: CragruOptions | None = None,
        store: Any = None,
        ledger: Any = None,
    ):
        """``store``: an open retrieval store of ``ws`` (default: load it); ``ledger``: an
        open ledger of ``ws`` for the adapters' freshness check (default: open one)."""
        from llmrec.llm.adapters import adapters_root, base_problem, load_config
        from llmrec.llm.shards import shard_of
        from retrieval.store import RetrievalStore

        self.ws = ws
        self._ledger = ledger
        self.opt = options or CragruOptions()
        if self.opt.backend not in backend_names():
            raise ArtifactError(
                f"unknown serving backend {self.opt.backend!r}; choose one of "
                f"{', '.join(backend_names())}"
            )
        self.store = store or RetrievalStore.load(ws)
        ds = ws.dataset
        self.catalog = Catalog.from_dataset(ds)
        want = self.opt.adapters
        explicit = isinstance(want, str) and want != "none"
        root = Path(want) if explicit else adapters_root(ws)
        cfg = load_config(ws, root) if want and want != "none" else None
        if explicit and cfg is None:
            raise ArtifactError(f"no adapters under {root} (config.json missing)")
        if cfg is not None:
            model = self.opt.model or cfg.base
            problem = None if self.opt.model else base_problem(cfg)
            if problem is not None:
                raise ArtifactError(f"adapters in {root}: {problem}")
        else:
            model = self.opt.model or str(default_lm_dir(ws))
            if self.opt.model is None and not Path(model).is_dir():
                raise ArtifactError(f"no base model in {model}: run 'llmrec build-lm' first")
        model = resolve_base(model)
        template = self.opt.template
        adapters = None
        self.adapter_config = None
        self.adapter_root = root if cfg is not None else None
        recipe = serving(model)
        self.history = self.opt.history
        self.n_candidates = self.opt.n_candidates
        if cfg is not None:
            self._check_binding(cfg, model, template, explicit)
            template = template or cfg.template
            adapters = self._adapter_paths(cfg, root, explicit)
            self.adapter_config = cfg
            if self.n_candidates is None:  # rank lists of the length the adapters learned
                self.n_candidates = cfg.examples.n_candidates
        else:
            template = template or recipe.template
        self.history = recipe.history if self.history is None else self.history
        self.n_candidates = recipe.n_candidates if self.n_candidates is None else self.n_candidates
        self.assignment = shard_of(ds.user_tokens, cfg.n_shards, cfg.seed) if adapters else None
        self.served_blend = self._served_blend()  # checked before the model is loaded
        load = self.opt.load or (cfg.load if cfg is not None else LoadOptions())
        self.backend = create_backend(
            self.opt.backend,
            BackendSpec(
                model,
                self.catalog,
                adapters=adapters,
                template=template,
                device=self.opt.device,
                batch_size=self.opt.batch_size,
                top_k=self.opt.top_k,
                load=load,
                options=dict(self.opt.backend_options),
            ),
        )
        if cfg is not None and not explicit:
            self._check_contract(cfg)

    def _served_blend(self) -> ServedBlend:
        """``--blend`` if given; without adapters 0 (the LM alone); else the workspace's fitted
        blend (:mod:`llmrec.serving.blend`, at the store's ledger version) or the adapters'
        trained prior weight."""
        if self.opt.blend is not None:
            return ServedBlend(float(self.opt.blend))
        if self.adapter_config is None:
            return ServedBlend(0.0)
        tuned = load_blend(self.ws)
        if tuned is None:
            return ServedBlend(float(self.adapter_config.lora.prior_weight))
        version = blend_version(self.ws)
        if version != self.store.ledger_version:
            raise ArtifactError(
                f"the served blend reflects ledger v{version}, the retrieval store "
                f"v{self.store.ledger_version}: re-fit it with 'llmrec adapters blend'"
            )
        return tuned

    @property
    def blend(self) -> float:
        """The served prior weight of users with a history (:class:`ServedBlend`)."""
        return self.served_blend.weight

    def n_history(self, user: int) -> int:
        """How many retained train items ``user`` has (what :class:`ServedBlend` groups by)."""
        return len(self.store.history(int(user))[0])

    def user_blend(self, user: int) -> float:
        """The served prior weight of ``user`` (by their retained train history's length)."""
        if self.served_blend.cold_weight is None:
            return self.served_blend.weight
        return self.served_blend.for_history(self.n_history(user))

    def _check_binding(self, cfg: Any, model: str, template: str | None, explicit: bool) -> None:
        """The base and template asked for are the adapters' own (unless named explicitly)."""
        from prompts import template_ref

        if explicit:
            return
        if model != resolve_base(cfg.base):
            raise ArtifactError(
                f"the adapters were tuned on {cfg.base}, not {model}: serve without --model, "
                "with '--adapters none' for the base model alone, or name adapters with "
                "'--adapters DIR'"
            )
        if template is not None and template_ref(template) != cfg.template:
            raise ArtifactError(
                f"the adapters were tuned with template {cfg.template!r}, not {template!r}: "
                "serve without --template (or '--adapters none' / '--adapters DIR')"
            )

    def _adapter_paths(self, cfg: Any, root: Path, explicit: bool) -> dict[str, Path]:
        """Shard adapter folders; for the workspace's own: fresh, and on an unchanged base."""
        from llmrec.llm.adapters import adapter_paths, shard_dir, shard_manifest, stale_shards

        if explicit:
            self._check_explicit(cfg, root)
        else:
            stale = stale_shards(ws=self.ws, ledger=self._ledger)
            if stale:
                raise ArtifactError(
                    f"adapters of shards {stale} do not reflect the newest ledger version; run "
                    "'llmrec forget' to finish the pending stages"
                )
            have = weights_hash(cfg.base, cfg.load.revision)
            for s in range(cfg.n_shards):
                m = shard_manifest(shard_dir(root, s)) or {}
                if m.get("base_weights_sha256") not in (None, have):
                    raise ArtifactError(
                        f"base model {cfg.base} changed since the adapters were tuned (weights "
                        "hash differs): re-tune with 'llmrec adapters tune --force'"
                    )
        return adapter_paths(self.ws, root)[1]

    def _check_explicit(self, cfg: Any, root: Path) -> None:
        """Adapters named on the command line pass the ledger check the workspace's own pass:
        each shard's training data must be what the workspace's own up-to-date shard was tuned
        on (the same hash), else they may hold forgotten data. Without a forget request there
        is nothing they could run ahead of."""
        from llmrec.llm.adapters import (
            adapters_root,
            load_config,
            shard_dir,
            shard_manifest,
            stale_shards,
        )

        if not self.ws.ledger_path.exists():
            return
        with self.ws.ledger() as led:
            version = led.version
        if version == 0:
            return
        own_root = adapters_root(self.ws)
        own = load_config(self.ws, own_root)
        if own is None or own.n_shards != cfg.n_shards or stale_shards(ws=self.ws):
            raise ArtifactError(
                f"adapters in {root} cannot be checked against the forget ledger (v{version}): "
                "serve the workspace's own adapters (tuned and brought up to date here) or "
                "'--adapters none'"
            )
        for s in range(cfg.n_shards):
            theirs = (shard_manifest(shard_dir(root, s)) or {}).get("data_hash")
            ours = (shard_manifest(shard_dir(own_root, s)) or {}).get("data_hash")
            if theirs is None or theirs != ours:
                raise ArtifactError(
                    f"adapter shard {s} in {root} was tuned on other data than the ledger (v"
                    f"{version}) retains: it may hold forgotten data; serve the workspace's own "
                    "adapters or re-tune"
                )

    def _check_contract(self, cfg: Any) -> None:
        """The tokenizer renders and encodes prompts as it did when the adapters were tuned."""
        from llmrec.llm.adapters import prompt_contract

        if not cfg.contract:
            return
        now = prompt_contract(self.backend.builder)
        for key in ("template", "template_sha256", "chat_template_sha256", "bos"):
            if key in cfg.contract and cfg.contract[key] != now[key]:
                raise ArtifactError(
                    f"prompt contract broken: {key} is {now[key]!r} now but the adapters were "
                    f"tuned with {cfg.contract[key]!r}; re-tune with 'llmrec adapters tune --force'"
                )

    def adapter_for(self, user: int) -> str | None:
        """Name of the shard adapter serving ``user`` (``None``: the base model alone)."""
        if self.assignment is None:
            return None
        return f"shard-{int(self.assignment[int(user)]):03d}"

    @property
    def view(self):
        return self.store.view

    def context(self, user: int, strategy: str | None = None) -> UserContext:
        """Prompt material of one user from the retrieval store (retained data only)."""
        cands = None
        if self.opt.candidates is not None:  # another of the store's lists than its default
            one = np.array([int(user)])
            cands = self.store.candidates(one, self.n_candidates, source=self.opt.candidates)[0]
        got = self.store.retrieve(
            int(user),
            strategy or self.opt.strategy,
            H=self.history,
            n_candidates=self.n_candidates,
            candidates=cands,
        )
        return UserContext(
            int(user),
            got["profile"],
            np.asarray(got["history_items"], dtype=np.int64),
            np.asarray(got["history_ratings"], dtype=np.float64),
            np.asarray(got["candidates"], dtype=np.int64),
            token=str(self.ws.dataset.user_tokens[int(user)]),
        )

    def recommend(
        self,
        users: Sequence[int],
        mode: str = "likelihood",
        strategy: str | None = None,
        blend: float | None = None,
        contexts: Sequence[UserContext] | None = None,
    ) -> list[Ranking]:
        """Regenerated rankings for ``users`` (internal indices), in input order."""
        if mode not in RANK_MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(RANK_MODES)}")
        users = [int(u) for u in users]
        for u in users:
            if self.view.forgotten_users[u]:
                tok = self.ws.dataset.user_tokens[u]
                raise DataError(f"user {tok!r} has been forgotten: nothing is served for them")
        ctxs = (
            list(contexts) if contexts is not None else [self.context(u, strategy) for u in users]
        )
        weights = [self.user_blend(u) if blend is None else float(blend) for u in users]
        out: dict[int, Ranking] = {}
        groups = (
            {None: list(range(len(users)))}
            if self.assignment is None
            else _group(self.assignment[users])
        )
        for shard, idx in groups.items():
            name = None if shard is None else f"shard-{shard:03d}"
            ranked = checked_rank(
                self.backend,
                [ctxs[k] for k in idx],
                mode,
                forgotten=self.view.forgotten_items,
                adapter=name,
                scope=self.opt.scope,
            )
            for k, r in zip(idx, ranked):
                cands = ctxs[k].candidates[~self.view.forgotten_items[ctxs[k].candidates]]
                out[k] = _apply_policy(
                    self.ws, self.view, users[k], blend_ranking(r, cands, weights[k])
                )
        return [out[k] for k in range(len(users))]


def _apply_policy(ws: Workspace, view: Any, user: int, r: Ranking) -> Ranking:
    """Drop what the workspace's forget policy never shows ``user`` (under ``suppress``: items of
    their forgotten interactions; a catalogue-scope answer can name items outside the already
    filtered candidate list, so the served ranking is filtered too)."""
    keep = np.isin(r.items, suppress_filter(ws, view, user, r.items))
    if keep.all():
        return r
    return replace(r, items=r.items[keep], scores=r.scores[keep])


def _group(labels: np.ndarray) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for k, s in enumerate(labels.tolist()):
        groups.setdefault(int(s), []).append(k)
    return groups
