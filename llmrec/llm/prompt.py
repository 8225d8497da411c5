"""Building one user's prompt: profile + retained history + candidate list + instruction.

:class:`PromptBuilder` joins a :class:`prompts.PromptTemplate`, the catalogue text and the model's
item spelling. The caller passes only retained data: the profile from
:meth:`RetainedView.visible_attributes` (forgotten attributes already dropped), the retained
history, the candidates with forgotten items already removed. Data text (titles, profile values)
is defanged (:func:`llmrec.llm.catalog.defang`): it cannot inject item or control tokens.

The prompt contract, one for tuning and serving (:meth:`PromptBuilder.encode`):

* the text is the template's rendering (through the tokenizer's chat template when it has one),
  ending with the answer prefix;
* token ids come from the model's own tokenizer, with BOS first where the tokenizer adds it (and
  the rendered text does not already start with it);
* the budget is the model's true context length (:func:`context_limit`: the config's position
  limit and the tokenizer's ``model_max_length``) minus an answer reserve fixed by the catalogue
  (:meth:`PromptBuilder.answer_reserve`);
* instruction, profile, every candidate and the answer lead are always kept; history entries are
  added in the strategy's order while the prompt fits (the largest fitting prefix, found by
  bisection over exact token counts); a prompt that cannot fit even without history is an error,
  never a silent cut;
* answers are tokenised *in context* (:meth:`PromptBuilder.continuations`): prompt and answer are
  tokenised as one string and split where the token sequences part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmrec.errors import LlmrecError
from llmrec.llm.catalog import Catalog, ItemVerbalizer, defang
from prompts import PromptTemplate, load_template

_POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")
_HUGE = 1 << 20  # tokenizers without a limit report ~1e30


class PromptTooLong(LlmrecError, ValueError):
    """Instruction, profile and candidates alone do not fit the model's context."""


@dataclass
class UserContext:
    """Everything a prompt is made of, for one user (internal indices)."""

    user: int
    attributes: Mapping[str, Any]
    history_items: np.ndarray
    history_ratings: np.ndarray | None
    candidates: np.ndarray
    #: the user's dataset id, for messages (the internal index means nothing to a reader)
    token: str | None = None


@dataclass
class EncodedPrompt:
    """One rendered prompt: its text, its token ids and how many history entries it keeps."""

    text: str
    ids: list[int]
    n_history: int
    limit: int | None


def context_limit(tokenizer: Any, config: Any = None) -> int | None:
    """Positions the model can attend to: the smallest of the config's position limit
    (``max_position_embeddings``/``n_positions``/...) and the tokenizer's ``model_max_length``;
    ``None`` when neither says."""
    found = []
    if config is not None:
        for name in _POSITION_FIELDS:
            v = getattr(config, name, None)
            if isinstance(v, int) and v > 0:
                found.append(v)
                break
    tm = getattr(tokenizer, "model_max_length", None)
    if isinstance(tm, int) and 0 < tm < _HUGE:
        found.append(tm)
    return min(found) if found else None


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS token first when it encodes text for the model."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _rating(r: float | None) -> str:
    if r is None or (isinstance(r, float) and np.isnan(r)):
        return "?"
    return f"{float(r):g}"


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


class PromptBuilder:
    """Renders and encodes :class:`UserContext` objects with one template for one model."""

    def __init__(
        self,
        template: PromptTemplate | str,
        catalog: Catalog,
        verbalizer: ItemVerbalizer,
        tokenizer: Any = None,
        top_k: int = 10,
        limit: int | None = None,
    ):
        self.template = load_template(template) if isinstance(template, str) else template
        self.catalog = catalog
        self.verbalize = verbalizer
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.limit = limit if limit is not None else context_limit(tokenizer)
        self.bos_id = (
            tokenizer.bos_token_id if tokenizer is not None and adds_bos(tokenizer) else None
        )
        self._reserve: int | None = None

    # ------------------------------------------------------------------ rendering
    def _item(self, idx: int, **extra: Any) -> dict[str, Any]:
        return {"item": self.verbalize(int(idx)), **self.catalog.fields(int(idx)), **extra}

    def parts(
        self, ctx: UserContext, n_history: int | None = None, labels: Sequence[str] | None = None
    ) -> tuple[str, str]:
        """``(system, user)`` texts; ``n_history`` keeps only the first history entries;
        ``labels`` writes the candidates under these labels instead of their ids."""
        items = ctx.history_items if n_history is None else ctx.history_items[:n_history]
        ratings = ctx.history_ratings
        history = [
            self._item(i, rating=_rating(None if ratings is None else ratings[k]))
            for k, i in enumerate(items)
        ]
        cands = [self._item(i, rank=k + 1) for k, i in enumerate(ctx.candidates)]
        if labels is not None:
            for c, lab in zip(cands, labels):
                c["item"] = lab
        profile = {a: defang(v) for a, v in ctx.attributes.items()}
        return self.template.render(profile, history, cands, top_k=self.top_k)

    def render(
        self, ctx: UserContext, n_history: int | None = None, labels: Sequence[str] | None = None
    ) -> str:
        """The model input text (chat template where the tokenizer has one, answer prefix last)."""
        return self.template.model_input(self.tokenizer, *self.parts(ctx, n_history, labels))

    # ------------------------------------------------------------------ tokens
    def _bos_for(self, text: str) -> list[int]:
        if self.bos_id is None:
            return []
        bos_text = getattr(self.tokenizer, "bos_token", None)
        return [] if bos_text and text.startswith(bos_text) else [self.bos_id]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of model inputs: the tokenizer's encoding, BOS first where it adds one."""
        enc = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [self._bos_for(t) + list(i) for t, i in zip(texts, enc)]

    def answer_reserve(self) -> int:
        """Tokens kept free for the answer: ``top_k`` entries of the longest item id of the
        catalogue with their JSON scaffold, plus the closing brace (fixed by the catalogue and
        the tokenizer, so tuning and serving budget the same prompt)."""
        if self._reserve is None:
            if self.tokenizer is None:
                self._reserve = 0
            else:
                spell = [self.verbalize(i) for i in range(len(self.catalog))]
                lens = [
                    len(x) for x in self.tokenizer(spell, add_special_tokens=False)["input_ids"]
                ]
                scaffold = len(self.tokenizer('": 10, "', add_special_tokens=False)["input_ids"])
                self._reserve = max(1, self.top_k) * (max(lens, default=1) + scaffold + 1) + 2
        return self._reserve

    def encode(
        self,
        ctx: UserContext,
        reserve: int | None = None,
        labels: Sequence[str] | None = None,
    ) -> EncodedPrompt:
        """The prompt of ``ctx`` as text and token ids, history filled to the budget
        (``limit - reserve``; default reserve: :meth:`answer_reserve`). Without a tokenizer: the
        text with the whole history and no token ids."""
        n_all = len(ctx.history_items)

        def build(n: int) -> tuple[str, list[int]]:
            text = self.render(ctx, n, labels)
            return text, self.token_ids([text])[0] if self.tokenizer is not None else []

        text, ids = build(n_all)
        if self.tokenizer is None or self.limit is None:
            return EncodedPrompt(text, ids, n_all, self.limit)
        budget = self.limit - (self.answer_reserve() if reserve is None else reserve)
        if len(ids) <= budget:
            return EncodedPrompt(text, ids, n_all, self.limit)
        lo_text, lo_ids = build(0)
        if len(lo_ids) > budget:
            who = f"user {ctx.token}" if ctx.token is not None else "a user"
            reserve = self.limit - budget
            if budget <= 0:  # the answer alone fills the model: the list asked for is too long
                raise PromptTooLong(
                    f"the answer of {self.top_k} items needs {reserve} tokens but the model "
                    f"takes {self.limit} positions: use a smaller --top-k"
                )
            raise PromptTooLong(
                f"the prompt of {who} needs {len(lo_ids)} tokens without any history "
                f"({len(ctx.candidates)} candidates) but the model takes {self.limit} positions, "
                f"{reserve} of them kept for the answer of {self.top_k} items: use fewer "
                "candidates (--candidates), a smaller --top-k or a shorter template"
            )
        # the largest n that fits (token counts grow with n): interpolation search, since
        # counts grow about linearly, with a bisection step whenever a guess shrank the
        # bracket by less than half (same answer as plain bisection, fewer encodings)
        lo, hi = 0, n_all  # fits(lo), not fits(hi)
        n_lo, n_hi = len(lo_ids), len(ids)
        best = (lo_text, lo_ids)
        bisect = False
        while hi - lo > 1:
            if bisect:
                mid = (lo + hi) // 2
            else:
                guess = lo + (budget - n_lo) * (hi - lo) // max(1, n_hi - n_lo)
                mid = min(max(guess, lo + 1), hi - 1)
            width = hi - lo
            t, i = build(mid)
            if len(i) <= budget:
                lo, n_lo, best = mid, len(i), (t, i)
            else:
                hi, n_hi = mid, len(i)
            bisect = not bisect and (hi - lo) * 2 > width
        return EncodedPrompt(best[0], best[1], lo, self.limit)

    def continuations(
        self, prompt: EncodedPrompt, suffixes: Sequence[str]
    ) -> tuple[int, list[list[int]]]:
        """In-context tokens of ``prompt.text + s`` for every suffix: ``(L, tails)`` where the
        first ``L`` tokens are shared by the prompt and every ``prompt.text + s`` and ``tails``
        are the rest of each. ``L == len(prompt.ids)`` unless the tokenizer merges across the
        prompt's end (then the tails start with the merged token)."""
        full = self.token_ids([prompt.text + s for s in suffixes])
        cut = min([len(prompt.ids)] + [_lcp(prompt.ids, f) for f in full])
        return cut, [f[cut:] for f in full]

    # ------------------------------------------------------------------ compatibility
    def text(self, ctx: UserContext, max_tokens: int | None = None, reserve: int = 0) -> str:
        """The model input text for ``ctx``; with ``max_tokens`` history is filled to
        ``max_tokens - reserve`` tokens (:meth:`encode`)."""
        if max_tokens is None or self.tokenizer is None:
            return self.render(ctx)
        old, self.limit = self.limit, max_tokens
        try:
            return self.encode(ctx, reserve).text
        finally:
            self.limit = old

    def texts(
        self, contexts: Sequence[UserContext], max_tokens: int | None = None, reserve: int = 0
    ) -> list[str]:
        return [self.text(c, max_tokens, reserve) for c in contexts]


def answer_text(verbalized: Sequence[str], scores: Sequence[float] | None = None) -> str:
    """The JSON answer ``{"a": 10, "b": 9}`` for items best first (after the answer prefix).

    Returned *without* the opening ``{"`` that every prompt already ends with.
    """
    if scores is None:
        scores = [max(1, 10 - k) for k in range(len(verbalized))]
    body = ', "'.join(f'{v}": {s:g}' for v, s in zip(verbalized, scores))
    return body + "}"


def span_tokens(
    tokenizer: Any, texts: Sequence[str], spans: Sequence[tuple[int, int]]
) -> list[list[int] | None]:
    """For each text, the tokens that spell exactly ``text[a:b]`` inside it (offsets of a fast
    tokenizer); ``None`` where the tokenizer merges the span with its neighbours (no token
    boundary at ``a`` or ``b``) or cannot report offsets."""
    try:
        enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        return [None] * len(texts)
    out: list[list[int] | None] = []
    for ids, offs, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], spans):
        inside = [t for t, (s, e) in zip(ids, offs) if s >= a and e <= b and e > s]
        straddle = any(s < a < e or s < b < e for s, e in offs)
        out.append(None if straddle or not inside else inside)
    return out
