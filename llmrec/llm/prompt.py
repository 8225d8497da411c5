"""Building one user's prompt: profile + retained history + candidate list + instruction.

:class:`PromptBuilder` joins a :class:`prompts.PromptTemplate`, the catalogue text and the model's
item spelling. The caller passes only retained data: the profile from
:meth:`RetainedView.visible_attributes` (forgotten attributes already dropped), the retained
history, the candidates with forgotten items already removed. The same builder makes the prompts
the adapters are tuned on and the prompts served at inference, so both see one format. Data text
(titles, profile values) is defanged (:func:`llmrec.llm.catalog.defang`): it cannot inject item or
control tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmrec.llm.catalog import Catalog, ItemVerbalizer, defang
from prompts import PromptTemplate, load_template


@dataclass
class UserContext:
    """Everything a prompt is made of, for one user (internal indices)."""

    user: int
    attributes: Mapping[str, Any]
    history_items: np.ndarray
    history_ratings: np.ndarray | None
    candidates: np.ndarray


def _rating(r: float | None) -> str:
    if r is None or (isinstance(r, float) and np.isnan(r)):
        return "?"
    return f"{float(r):g}"


class PromptBuilder:
    """Renders :class:`UserContext` objects with one template for one model's tokenizer."""

    def __init__(
        self,
        template: PromptTemplate | str,
        catalog: Catalog,
        verbalizer: ItemVerbalizer,
        tokenizer: Any = None,
        top_k: int = 10,
    ):
        self.template = load_template(template) if isinstance(template, str) else template
        self.catalog = catalog
        self.verbalize = verbalizer
        self.tokenizer = tokenizer
        self.top_k = top_k

    def _item(self, idx: int, **extra: Any) -> dict[str, Any]:
        return {"item": self.verbalize(int(idx)), **self.catalog.fields(int(idx)), **extra}

    def parts(self, ctx: UserContext, n_history: int | None = None) -> tuple[str, str]:
        """``(system, user)`` texts; ``n_history`` keeps only the first history entries."""
        items = ctx.history_items if n_history is None else ctx.history_items[:n_history]
        ratings = ctx.history_ratings
        history = [
            self._item(i, rating=_rating(None if ratings is None else ratings[k]))
            for k, i in enumerate(items)
        ]
        cands = [self._item(i, rank=k + 1) for k, i in enumerate(ctx.candidates)]
        profile = {a: defang(v) for a, v in ctx.attributes.items()}
        return self.template.render(profile, history, cands, top_k=self.top_k)

    def text(self, ctx: UserContext, max_tokens: int | None = None, reserve: int = 0) -> str:
        """The model input for ``ctx``.

        With ``max_tokens`` (and a tokenizer) history entries are dropped from the end until the
        prompt plus ``reserve`` answer tokens fits, so a long history never overflows the model.
        """
        text = self.template.model_input(self.tokenizer, *self.parts(ctx))
        if max_tokens is None or self.tokenizer is None:
            return text
        n = len(ctx.history_items)
        while n > 0 and self._length(text) + reserve > max_tokens:
            over = self._length(text) + reserve - max_tokens
            n = max(0, n - max(1, over // 3))
            text = self.template.model_input(self.tokenizer, *self.parts(ctx, n_history=n))
        return text

    def _length(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

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
