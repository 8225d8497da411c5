"""The contract every serving backend keeps (:class:`~llmrec.llm.backends.RankBackend`).

A plug-in author runs the same checks as the built-in Hugging Face backend::

    from llmrec.testing.backend import BackendCase, CHECKS

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_my_backend(check):
        check(BackendCase(MyBackend(...), contexts))

Each check is a function of a :class:`BackendCase` that raises ``AssertionError`` on a
violation:

* the backend is a :class:`RankBackend` and names its adapters;
* every mode answers one ranking per context, in order, over that context's candidates only,
  each candidate once, with one score per item;
* the same request gives the same answer (items and scores), alone or batched with others;
* a forgotten item is never returned, in any mode or scope, whether or not it was a candidate,
  and a context whose candidates are all forgotten gets an empty ranking;
* the adapter asked for is the one served: switching adapters in between changes nothing, an
  adapter changes the base model's scores, and an unknown adapter or mode is a ``ValueError``;
* the prompt of a context is text, in every mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from llmrec.llm.backends.base import RANK_MODES, RankBackend, Ranking
from llmrec.llm.prompt import UserContext


@dataclass
class BackendCase:
    """A backend and the contexts it is checked on (at least two, with at least three
    candidates each, disjoint from their histories); ``modes``: the modes it serves."""

    backend: RankBackend
    contexts: list[UserContext]
    modes: tuple[str, ...] = RANK_MODES
    adapters: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.adapters:
            self.adapters = [None, *self.backend.adapters[:2]]

    @property
    def n_items(self) -> int:
        return len(self.backend.catalog)


def contract_contexts(
    n_items: int, n_users: int = 4, n_candidates: int = 8, n_history: int = 6, seed: int = 0
) -> list[UserContext]:
    """Seeded contexts over a catalogue of ``n_items`` (candidates disjoint from histories)."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        perm = rng.permutation(n_items)
        hist = perm[:n_history]
        out.append(
            UserContext(
                u,
                {"gender": "F", "age": "25"},
                hist.astype(np.int64),
                np.full(len(hist), 4.0),
                perm[n_history : n_history + n_candidates].astype(np.int64),
            )
        )
    return out


def _same(a: Sequence[Ranking], b: Sequence[Ranking]) -> bool:
    return all(
        np.array_equal(x.items, y.items) and np.array_equal(x.scores, y.scores, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def _forgotten(case: BackendCase) -> np.ndarray:
    """Forget the first candidate of every context, the last of the first one and one item
    that is nobody's candidate."""
    mask = np.zeros(case.n_items, dtype=bool)
    for c in case.contexts:
        mask[int(c.candidates[0])] = True
    mask[int(case.contexts[0].candidates[-1])] = True
    used = np.concatenate([c.candidates for c in case.contexts])
    free = np.setdiff1d(np.arange(case.n_items), used)
    if len(free):
        mask[int(free[0])] = True
    return mask


def _valid(r: Ranking, ctx: UserContext, mode: str, forgotten: np.ndarray | None = None) -> None:
    items = np.asarray(r.items, dtype=np.int64)
    assert r.user == ctx.user, f"{mode}: ranking of user {r.user} answers user {ctx.user}"
    assert r.mode == mode, f"{mode}: ranking says mode {r.mode!r}"
    assert len(r.scores) == len(items), f"{mode}: {len(r.scores)} scores for {len(items)} items"
    assert len(set(items.tolist())) == len(items), f"{mode}: an item is ranked twice"
    cands = np.asarray(ctx.candidates, dtype=np.int64)
    if forgotten is not None:
        cands = cands[~forgotten[cands]]
        leaked = items[forgotten[items]] if len(items) else items
        assert not len(leaked), f"{mode}: forgotten items {leaked.tolist()} returned"
    assert sorted(items.tolist()) == sorted(cands.tolist()), (
        f"{mode}: ranked {sorted(items.tolist())}, candidates {sorted(cands.tolist())}"
    )


def check_is_a_rank_backend(case: BackendCase) -> None:
    b = case.backend
    assert isinstance(b, RankBackend), f"{type(b).__name__} lacks part of the RankBackend protocol"
    assert all(isinstance(a, str) for a in b.adapters), "adapter names must be strings"
    assert case.n_items > 0 and b.builder is not None


def check_modes_rank_each_candidate_once(case: BackendCase) -> None:
    for mode in case.modes:
        for adapter in case.adapters:
            out = case.backend.rank(case.contexts, mode, adapter=adapter)
            assert len(out) == len(case.contexts), f"{mode}: {len(out)} rankings"
            for r, c in zip(out, case.contexts):
                _valid(r, c, mode)


def check_deterministic_alone_or_batched(case: BackendCase) -> None:
    for mode in case.modes:
        adapter = case.adapters[-1]
        first = case.backend.rank(case.contexts, mode, adapter=adapter)
        assert _same(first, case.backend.rank(case.contexts, mode, adapter=adapter)), (
            f"{mode}: the same request gave another answer"
        )
        alone = [case.backend.rank([c], mode, adapter=adapter)[0] for c in case.contexts]
        assert [r.items.tolist() for r in alone] == [r.items.tolist() for r in first], (
            f"{mode}: a context ranked alone differs from the same context in a batch"
        )


def check_forgotten_items_never_returned(case: BackendCase) -> None:
    forgotten = _forgotten(case)
    for mode in case.modes:
        for adapter in case.adapters:
            out = case.backend.rank(case.contexts, mode, forgotten=forgotten, adapter=adapter)
            for r, c in zip(out, case.contexts):
                _valid(r, c, mode, forgotten)
    if "constrained" in case.modes:
        out = case.backend.rank(case.contexts, "constrained", forgotten=forgotten, scope="catalog")
        for r in out:
            items = np.asarray(r.items, dtype=np.int64)
            assert not forgotten[items].any(), "constrained/catalog: a forgotten item returned"
            assert len(set(items.tolist())) == len(items), "constrained/catalog: repeated item"


def check_all_candidates_forgotten_gives_an_empty_ranking(case: BackendCase) -> None:
    ctx = case.contexts[0]
    forgotten = np.zeros(case.n_items, dtype=bool)
    forgotten[np.asarray(ctx.candidates, dtype=np.int64)] = True
    for mode in case.modes:
        (r,) = case.backend.rank([ctx], mode, forgotten=forgotten)
        assert len(r.items) == 0 and len(r.scores) == 0, f"{mode}: {r.items.tolist()} served"


def check_adapter_choice_is_respected(case: BackendCase) -> None:
    b = case.backend
    named = [a for a in case.adapters if a is not None]
    mode = case.modes[0]
    alone = {a: b.rank(case.contexts, mode, adapter=a) for a in case.adapters}
    for a in reversed(case.adapters):  # the other order: no adapter state leaks across calls
        assert _same(b.rank(case.contexts, mode, adapter=a), alone[a]), (
            f"{mode}: adapter {a!r} answers differently after another adapter was served"
        )
    for a in named if None in alone else []:
        assert not _same(alone[a], alone[None]), f"adapter {a!r} serves the base model's answer"
    try:
        b.rank(case.contexts[:1], mode, adapter="no-such-adapter")
    except ValueError:
        return
    raise AssertionError("an adapter the backend does not have was served")


def check_unknown_mode_is_rejected(case: BackendCase) -> None:
    try:
        case.backend.rank(case.contexts[:1], "no-such-mode")
    except ValueError:
        return
    raise AssertionError("an unknown mode was served")


def check_prompt_is_text(case: BackendCase) -> None:
    for mode in case.modes:
        for c in case.contexts:
            p = case.backend.prompt(c, mode)
            assert isinstance(p.text, str) and p.text, f"{mode}: empty prompt"


def check_request_contexts_are_not_modified(case: BackendCase) -> None:
    before = [replace(c, candidates=c.candidates.copy()) for c in case.contexts]
    case.backend.rank(case.contexts, case.modes[0], forgotten=_forgotten(case))
    for a, b in zip(before, case.contexts):
        assert np.array_equal(a.candidates, b.candidates), "the backend changed a request"


CHECKS: tuple[Callable[[BackendCase], None], ...] = (
    check_is_a_rank_backend,
    check_modes_rank_each_candidate_once,
    check_deterministic_alone_or_batched,
    check_forgotten_items_never_returned,
    check_all_candidates_forgotten_gives_an_empty_ranking,
    check_adapter_choice_is_respected,
    check_unknown_mode_is_rejected,
    check_prompt_is_text,
    check_request_contexts_are_not_modified,
)


def check_backend(case: BackendCase) -> None:
    """Every check of :data:`CHECKS` on ``case``."""
    for check in CHECKS:
        check(case)
