"""Catalogue-only prompt sessions that teach the base model the prompt format.

A *session* is a prompt in the serving format whose "user" is made up from the catalogue alone:
one or two genres are drawn, the history is a random set of items of those genres, the candidate
list mixes held-out items of those genres with random other items, and the answer names the
held-out ones, best first, followed by the other candidates in list order (an answer ranks the
candidate list). The held-out items sit near the top of the candidate list more often
than not (drawn with weight ``1 / (1 + rank / rank_scale)``), as they would in a candidate
generator's ranking, and half of the other candidates share the session's genres, so neither
position nor genre alone gives the answer away. No interaction, rating or profile of any real user is involved (ratings are
random, the profile is empty), so a model trained on sessions still holds no user data. What it
learns is the routing the adapters need -- reading the history and candidates and writing items
like them into the answer -- so the per-shard adapters only have to learn the collaborative
part.
"""

from __future__ import annotations

import numpy as np

from llmrec.llm.catalog import Catalog
from llmrec.llm.prompt import PromptBuilder, UserContext, answer_text


def catalog_sessions(
    catalog: Catalog,
    builder: PromptBuilder,
    n: int,
    seed: int = 0,
    history: tuple[int, int] = (5, 40),
    n_candidates: int = 50,
    n_targets: int = 3,
    rank_scale: float = 5.0,
    max_tokens: int | None = None,
    answer_items: int = 10,
) -> list[str]:
    """``n`` session texts (prompt + answer), deterministic for a seed. ``max_tokens``: the
    prompt plus answer fit in that many tokens (history entries are dropped to fit)."""
    rng = np.random.default_rng([seed, 7])
    by_genre: dict[str, list[int]] = {}
    for i, gs in enumerate(catalog.genres):
        for g in gs:
            by_genre.setdefault(g, []).append(i)
    genres = sorted(g for g, items in by_genre.items() if len(items) >= 4)
    if not genres:
        return []
    sizes = np.array([len(by_genre[g]) for g in genres], dtype=np.float64)
    p = sizes / sizes.sum()
    n_items = len(catalog)
    out = []
    for _ in range(n):
        chosen = rng.choice(
            len(genres), size=min(len(genres), rng.integers(1, 3)), replace=False, p=p
        )
        pool = np.unique(np.concatenate([by_genre[genres[k]] for k in chosen]))
        pool = rng.permutation(pool)
        k_t = int(min(n_targets, max(1, len(pool) // 4)))
        h = int(min(len(pool) - k_t, rng.integers(history[0], history[1] + 1)))
        targets, hist = pool[:k_t], pool[k_t : k_t + h]
        n_fill = n_candidates - k_t
        near = pool[k_t + h :][: n_fill // 2]
        others = np.setdiff1d(np.arange(n_items), np.concatenate([targets, hist, near]))
        far = rng.choice(others, size=min(len(others), n_fill - len(near)), replace=False)
        fill = list(rng.permutation(np.concatenate([near, far])))
        size = len(fill) + k_t
        w = 1.0 / (1.0 + np.arange(size) / rank_scale)
        slots = np.sort(rng.choice(size, size=k_t, replace=False, p=w / w.sum()))
        cands = np.empty(size, dtype=np.int64)
        mask = np.zeros(size, dtype=bool)
        mask[slots] = True
        cands[mask], cands[~mask] = targets, np.asarray(fill, dtype=np.int64)
        ctx = UserContext(-1, {}, hist, rng.integers(1, 6, size=len(hist)).astype(float), cands)
        # the answer ranks the candidate list: the held-out items first, then the others in
        # list order, so the model learns to write candidates (and the JSON) at length
        ranked = np.concatenate([cands[mask], cands[~mask]])[:answer_items]
        answer = answer_text([builder.verbalize(int(t)) for t in ranked])
        if max_tokens is None:
            text = builder.template.model_input(None, *builder.parts(ctx))
        else:
            reserve = len(builder.tokenizer(answer, add_special_tokens=False)["input_ids"])
            text = builder.text(ctx, max_tokens, reserve)
        out.append(text + answer)
    return out
