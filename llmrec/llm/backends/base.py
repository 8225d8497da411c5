"""The serving-backend seam: what a backend is asked (:class:`RankBackend`) and what it answers
(:class:`Ranking`).

A backend is *how* a language model is run (Hugging Face + peft, or any other engine); *what*
is served stays outside it: the retrieval store builds each user's :class:`UserContext`, the
:class:`~llmrec.llm.prompt.PromptBuilder` renders it, :func:`~llmrec.llm.parsing.parse_ranking`
reads a written answer and :mod:`llmrec.llm.constrained` says which tokens a valid answer may
continue with. A backend ranks a batch of contexts in one mode, under one adapter per call:

* ``likelihood`` -- candidates scored by the model's likelihood of writing them first;
* ``verbalizer`` -- candidates under index labels, scored from one next-token distribution;
* ``json`` -- the model writes ``{item: score}`` itself, parsed and validated;
* ``constrained`` -- greedy decoding restricted to valid answers over the allowed items.

Whatever the backend does, :func:`checked_rank` (what the serving paths call) removes forgotten
items and items outside the request from its answer, so a backend cannot leak a forgotten item.
:mod:`llmrec.testing.backend` is the contract every backend passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from llmrec.llm.parsing import ParseReport
from llmrec.llm.prompt import EncodedPrompt, PromptBuilder, UserContext

if TYPE_CHECKING:
    from llmrec.llm.catalog import Catalog
    from llmrec.llm.loading import LoadOptions

MODES = ("likelihood", "json", "constrained")
RANK_MODES = MODES + ("verbalizer",)  # verbalizer: candidates under index labels (LlamaRec)
SCOPES = ("candidates", "catalog")


@dataclass
class Ranking:
    """One user's regenerated ranking of the candidate list (forgotten items removed)."""

    user: int
    items: np.ndarray
    scores: np.ndarray
    mode: str
    fallback: bool = False
    report: ParseReport | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, item_tokens: Sequence[str] | None = None) -> dict[str, Any]:
        items = self.items.tolist()
        out: dict[str, Any] = {
            "user": self.user,
            "mode": self.mode,
            "items": [str(item_tokens[i]) for i in items] if item_tokens is not None else items,
            "scores": [None if np.isnan(s) else float(s) for s in self.scores],
            "fallback": self.fallback,
        }
        if self.report is not None:
            out["parse"] = self.report.to_dict()
        if self.text is not None:
            out["text"] = self.text
        return out


@runtime_checkable
class RankBackend(Protocol):
    """A language model serving rankings.

    ``rank`` answers one :class:`Ranking` per context, in input order, for ``adapter`` (``None``:
    the base model alone; a name not in :attr:`adapters` is a ``ValueError``). ``forgotten`` is a
    bool mask over the catalogue of items never to output; ``scope`` (constrained mode) is
    ``candidates`` (item slots restricted to the context's candidates) or ``catalog`` (the whole
    catalogue minus forgotten items and the user's history). ``prompt`` is the prompt served for a
    context in a mode, as the backend's :attr:`builder` renders it. ``stats`` counts ``users``,
    ``seconds`` and ``fallbacks`` served.
    """

    catalog: Catalog
    builder: PromptBuilder
    stats: dict[str, float]

    @property
    def adapters(self) -> list[str]: ...

    def prompt(self, ctx: UserContext, mode: str = "likelihood") -> EncodedPrompt: ...

    def rank(
        self,
        contexts: Sequence[UserContext],
        mode: str = "likelihood",
        forgotten: np.ndarray | None = None,
        adapter: str | None = None,
        scope: str = "candidates",
    ) -> list[Ranking]: ...


@dataclass
class BackendSpec:
    """What a backend is built from: the base model (a folder or hub id, resolved), the
    catalogue, named adapter folders, the prompt template, batching, the answer length, the
    base's loading options, and ``options`` only this backend understands (e.g. the Hugging Face
    backend's ``quantize``, ``memo``, ``prefix_cache``)."""

    model: str
    catalog: Catalog
    adapters: dict[str, Any] | None = None
    template: str | None = None
    device: str | None = None
    batch_size: int = 16
    top_k: int = 10
    load: LoadOptions | None = None
    options: dict[str, Any] = field(default_factory=dict)


def check_mode(mode: str, scope: str = "candidates") -> None:
    if mode not in RANK_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(RANK_MODES)}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")


def forgotten_mask(forgotten: np.ndarray | None, n_items: int) -> np.ndarray:
    """``forgotten`` as a bool mask over the catalogue (``None``: nothing forgotten)."""
    if forgotten is None:
        return np.zeros(n_items, dtype=bool)
    return np.asarray(forgotten, dtype=bool)


def without_forgotten(contexts: Sequence[UserContext], forgotten: np.ndarray) -> list[UserContext]:
    """The contexts with forgotten items removed from their candidate lists."""
    out = []
    for c in contexts:
        cands = np.asarray(c.candidates, dtype=np.int64)
        out.append(replace(c, candidates=cands[~forgotten[cands]]))
    return out


def index_labels(n: int) -> list[str]:
    """Index labels of ``n`` candidates (verbalizer mode): ``A``..``Z``, ``a``..``z``, then
    numbers."""
    letters = [chr(c) for c in range(65, 91)] + [chr(c) for c in range(97, 123)]
    return [letters[k] if k < len(letters) else str(k + 1) for k in range(n)]


def encode_prompt(builder: PromptBuilder, ctx: UserContext, mode: str) -> EncodedPrompt:
    """The prompt served for ``ctx`` in ``mode`` (verbalizer: candidates under index labels)."""
    if mode == "verbalizer":
        return builder.encode(ctx, labels=index_labels(len(ctx.candidates)))
    return builder.encode(ctx)


def ranked(ctx: UserContext, scores: np.ndarray, mode: str) -> Ranking:
    """The candidates of ``ctx`` sorted by ``scores`` (best first, ties in candidate order)."""
    order = np.argsort(-scores, kind="stable")
    return Ranking(ctx.user, ctx.candidates[order], scores[order].astype(np.float64), mode)


def keep_servable(
    r: Ranking, ctx: UserContext, forgotten: np.ndarray, scope: str = "candidates"
) -> Ranking:
    """``r`` without forgotten items, duplicates and (``scope`` candidates) items outside the
    context's candidates: what may leave the serving path, whatever the backend answered."""
    items = np.asarray(r.items, dtype=np.int64)
    if not len(items):
        return r
    ok = (items >= 0) & (items < len(forgotten))
    ok[ok] = ~forgotten[items[ok]]
    if scope == "candidates":
        ok &= np.isin(items, np.asarray(ctx.candidates, dtype=np.int64))
    _, first = np.unique(items, return_index=True)
    once = np.zeros(len(items), dtype=bool)
    once[first] = True
    ok &= once
    if ok.all():
        return r
    return replace(r, items=items[ok], scores=np.asarray(r.scores)[ok])


def checked_rank(
    backend: RankBackend,
    contexts: Sequence[UserContext],
    mode: str,
    forgotten: np.ndarray | None = None,
    adapter: str | None = None,
    scope: str = "candidates",
) -> list[Ranking]:
    """``backend.rank`` as the serving paths call it: the mode and scope checked, one ranking per
    context, and nothing forgotten, repeated or (scope candidates) outside the request served."""
    check_mode(mode, scope)
    mask = forgotten_mask(forgotten, len(backend.catalog))
    out = backend.rank(contexts, mode, forgotten=mask, adapter=adapter, scope=scope)
    if len(out) != len(contexts):
        raise RuntimeError(f"backend answered {len(out)} rankings for {len(contexts)} contexts")
    return [keep_servable(r, c, mask, scope) for r, c in zip(out, contexts)]
