"""A serving backend defined in this module alone (issue 26): it keeps the backend contract,
is registered by name and serves ``llmrec recommend --backend toy``, before and after a forget,
with no edit to any other file. A backend that leaks forgotten items fails the contract, and
the serving path removes what it leaks anyway."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.data.requests import ForgetRequest
from llmrec.forget.runner import forget
from llmrec.llm.backends import (
    BackendSpec,
    Ranking,
    checked_rank,
    encode_prompt,
    register_backend,
    unregister_backend,
)
from llmrec.llm.backends.base import check_mode, forgotten_mask, without_forgotten
from llmrec.llm.catalog import Catalog, ItemVerbalizer
from llmrec.llm.parsing import parse_ranking
from llmrec.llm.prompt import EncodedPrompt, PromptBuilder, UserContext, answer_text
from llmrec.testing.backend import CHECKS, BackendCase, check_backend, contract_contexts
from llmrec.testing.fixtures import small_workspace
from retrieval.store import RetrievalStore


class GenreOverlapBackend:
    """Ranks candidates by how many genres they share with the user's history; an adapter is
    a named tie-break salt. json/constrained answers are written as JSON text and parsed by the
    toolkit's parser, like a model's answer."""

    ADAPTERS = {"shard-000": 3, "shard-001": 7}

    def __init__(self, catalog: Catalog, template: str | None = None, top_k: int = 10):
        self.catalog = catalog
        self.verbalizer = ItemVerbalizer(catalog)
        self.builder = PromptBuilder(template or "cragru", catalog, self.verbalizer, None, top_k)
        self.top_k = top_k
        self.stats: dict[str, float] = {"users": 0, "seconds": 0.0, "fallbacks": 0}

    @property
    def adapters(self) -> list[str]:
        return list(self.ADAPTERS)

    def prompt(self, ctx: UserContext, mode: str = "likelihood") -> EncodedPrompt:
        return encode_prompt(self.builder, ctx, mode)

    def _scores(self, ctx: UserContext, salt: int) -> np.ndarray:
        liked = {g for i in ctx.history_items for g in self.catalog.genres[int(i)]}
        overlap = [len(liked & set(self.catalog.genres[int(i)])) for i in ctx.candidates]
        tie = (np.asarray(ctx.candidates) * salt) % 101 / 1000.0
        return np.asarray(overlap, dtype=np.float64) + tie

    def rank(
        self,
        contexts: Sequence[UserContext],
        mode: str = "likelihood",
        forgotten: np.ndarray | None = None,
        adapter: str | None = None,
        scope: str = "candidates",
    ) -> list[Ranking]:
        check_mode(mode, scope)
        if adapter is not None and adapter not in self.ADAPTERS:
            raise ValueError(f"adapter {adapter!r} requested but the backend has {self.adapters}")
        forgotten = forgotten_mask(forgotten, len(self.catalog))
        t0, out = time.perf_counter(), []
        for c in without_forgotten(contexts, forgotten):
            scores = self._scores(c, self.ADAPTERS.get(adapter, 1))
            order = np.argsort(-scores, kind="stable")
            if mode in ("likelihood", "verbalizer"):
                out.append(Ranking(c.user, c.candidates[order], scores[order], mode))
                continue
            top = c.candidates[order][: self.top_k]
            text = '{"' + answer_text([self.verbalizer(int(i)) for i in top])
            items, got, rep = parse_ranking(text, c.candidates, self.verbalizer.lookup, forgotten)
            out.append(Ranking(c.user, items, got, mode, rep.fallback, rep, text))
        self.stats["users"] += len(out)
        self.stats["seconds"] += time.perf_counter() - t0
        return out


class LeakyBackend(GenreOverlapBackend):
    """Serves a forgotten item first whenever one is asked to be forgotten (a broken backend)."""

    def rank(self, contexts, mode="likelihood", forgotten=None, adapter=None, scope="candidates"):
        out = super().rank(contexts, mode, forgotten, adapter, scope)
        mask = forgotten_mask(forgotten, len(self.catalog))
        if mask.any():
            bad = int(np.flatnonzero(mask)[0])
            for r in out:
                r.items, r.scores = np.r_[bad, r.items], np.r_[99.0, r.scores]
        return out


def _toy(spec: BackendSpec) -> GenreOverlapBackend:
    return GenreOverlapBackend(spec.catalog, spec.template, spec.top_k)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = small_workspace(tmp_path_factory.mktemp("toy-backend"))
    RetrievalStore.build(
        ws, encoder="cf", n_candidates=20, seed=3, n_clusters=4, cf_params={"epochs": 2, "dim": 8}
    )
    return ws


@pytest.fixture
def toy():
    register_backend("toy", _toy)
    yield "toy"
    unregister_backend("toy")


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_toy_backend_keeps_the_contract(ws, check):
    cat = Catalog.from_dataset(ws.dataset)
    check(BackendCase(GenreOverlapBackend(cat, top_k=4), contract_contexts(len(cat))))


def test_a_leaking_backend_fails_the_contract_and_is_filtered_when_served(ws):
    cat = Catalog.from_dataset(ws.dataset)
    leaky = LeakyBackend(cat, top_k=4)
    ctxs = contract_contexts(len(cat))
    with pytest.raises(AssertionError, match="forgotten"):
        check_backend(BackendCase(leaky, ctxs))
    forgotten = np.zeros(len(cat), dtype=bool)
    forgotten[int(ctxs[0].candidates[1])] = True
    for r, c in zip(checked_rank(leaky, ctxs, "json", forgotten=forgotten), ctxs):
        assert not forgotten[r.items].any() and set(r.items.tolist()) <= set(c.candidates.tolist())


def _recommend(capsys, ws, user, *extra):
    argv = ["recommend", "--user", user, "--backend", "toy", "--adapters", "none"]
    code = main([*argv, "--model", "toy", *extra, "--workspace", str(ws.root), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.mark.parametrize("mode", ["likelihood", "json"])
def test_toy_backend_serves_llmrec_recommend_before_and_after_a_forget(ws, toy, capsys, mode):
    user = str(ws.dataset.user_tokens[4])
    res = _recommend(capsys, ws, user, "--mode", mode, "--show-prompt")
    assert res["items"] and set(res["items"]) <= set(res["candidates"])
    cat = Catalog.from_dataset(ws.dataset)
    index = {t: i for i, t in enumerate(ws.dataset.item_tokens)}
    ctx = UserContext(
        0,
        {},
        np.array([index[t] for t in res["history_items"]], dtype=np.int64),
        None,
        np.array([index[t] for t in res["candidates"]], dtype=np.int64),
    )
    (want,) = GenreOverlapBackend(cat).rank([ctx], mode)
    assert res["items"] == [str(ws.dataset.item_tokens[i]) for i in want.items[:10]]
    assert res["template"] == "cragru" and "Candidate" in res["prompt"]
    gone = res["items"][0]
    forget(ws, [ForgetRequest("item", items=(gone,))])
    after = _recommend(capsys, ws, user, "--mode", mode)
    assert after["items"] and gone not in after["items"] and gone not in after["candidates"]


def test_unknown_backend_is_one_clear_error(ws, capsys):
    user = str(ws.dataset.user_tokens[4])
    argv = ["recommend", "--user", user, "--backend", "nope", "--model", "toy"]
    code = main([*argv, "--workspace", str(ws.root)])
    err = capsys.readouterr().err
    assert code != 0 and "unknown serving backend 'nope'" in err and "Traceback" not in err
