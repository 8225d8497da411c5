"""The item catalogue as the language model sees it: item-id tokens, text fields, a text corpus.

Every item gets its own vocabulary token ``<i{token}>`` (``token`` = the dataset's item id) in the
toolkit's own tokenizer, so an item is one token to generate or to score. Models without such
tokens (any hub model) see the plain dataset id instead; :class:`ItemVerbalizer` hides the
difference. The corpus the base model is trained on is built from catalogue text only: titles,
years, genres. It holds no user data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from llmrec.data.dataset import Dataset

ITEM_TOKEN_RE = re.compile(r"<i([^<>\s]+)>")
# markup that a tokenizer may read as one control token: item tokens, ``</s>``, ``<|im_start|>``
_MARKUP_RE = re.compile(r"<(/?\|?[^<>\s]{1,64}?\|?)>")


MAX_FIELD_CHARS = 200  # a longer title/genre is cut (with "…"): one field cannot fill a prompt


def _field(text: str) -> str:
    text = defang(text)
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def defang(text: str) -> str:
    """Data text (titles, profile values) made inert: token-like markup such as ``<i50>``,
    ``</s>`` or ``<|im_start|>`` gets ``‹ ›`` instead of ``< >``, so a hostile field cannot inject
    an item token or a control token into a prompt or the base model's corpus; the rest of the
    text is kept as written."""
    return _MARKUP_RE.sub(lambda m: f"‹{m.group(1)}›", str(text))


def item_token(token: str) -> str:
    """The vocabulary token of the item whose dataset id is ``token``."""
    return f"<i{token}>"


@dataclass(frozen=True)
class Catalog:
    """Text fields of every item (by internal index), detached from the dataset tables."""

    tokens: tuple[str, ...]
    titles: tuple[str, ...]
    years: tuple[str, ...]
    genres: tuple[tuple[str, ...], ...]

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Catalog:
        n = ds.n_items
        return cls(
            tuple(str(t) for t in ds.item_tokens),
            tuple(_field(ds.item_title(i)) for i in range(n)),
            tuple(_field(ds.item_year(i)) for i in range(n)),
            tuple(tuple(_field(g) for g in ds.item_genres(i)) for i in range(n)),
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def fields(self, idx: int) -> dict[str, str]:
        """``title``, ``year``, ``genres`` (comma-joined) and ``token`` of one item."""
        return {
            "token": self.tokens[idx],
            "title": self.titles[idx],
            "year": self.years[idx],
            "genres": ", ".join(self.genres[idx]),
        }

    def text(self, idx: int) -> str:
        """``title (year) | genres``."""
        f = self.fields(idx)
        out = f["title"] + (f" ({f['year']})" if f["year"] else "")
        return out + (f" | {f['genres']}" if f["genres"] else "")


def catalog_corpus(catalog: Catalog, seed: int = 0, list_size: int = 24) -> list[str]:
    """Training lines for the base model, from catalogue text only.

    One description line per item (``<i1> Toy Story (1995) | Animation, Comedy``), then seeded
    shuffled lists of item tokens sharing a genre or a release year (``Comedy: <i1> <i7> ...``)
    and the same lists written as JSON objects, so item tokens are also seen in the list and JSON
    contexts the prompts use.
    """
    rng = np.random.default_rng(seed)
    lines = [f"{item_token(catalog.tokens[i])} {catalog.text(i)}" for i in range(len(catalog))]
    groups: dict[str, list[int]] = {}
    for i in range(len(catalog)):
        for g in catalog.genres[i]:
            groups.setdefault(g, []).append(i)
        if catalog.years[i]:
            groups.setdefault(catalog.years[i], []).append(i)
    for name in sorted(groups):
        members = np.array(groups[name])
        perm = rng.permutation(members)
        for s in range(0, len(perm), list_size):
            chunk = [item_token(catalog.tokens[i]) for i in perm[s : s + list_size]]
            lines.append(f"{name}: " + " ".join(chunk))
            top = chunk[:10]
            body = ", ".join(f'"{t}": {10 - k}' for k, t in enumerate(top))
            lines.append(f"{name} {{{body}}}")
    order = rng.permutation(len(lines))
    return [lines[k] for k in order]


class ItemVerbalizer:
    """How items are written for one tokenizer, and how written ids map back to items.

    With the toolkit's tokenizer an item is its ``<i{token}>`` token; with any other tokenizer it
    is the dataset id as plain text. :meth:`lookup` accepts both spellings.
    """

    def __init__(self, catalog: Catalog, vocab: dict[str, int] | None = None):
        self.catalog = catalog
        self._index = {t: i for i, t in enumerate(catalog.tokens)}
        vocab = vocab or {}
        ids = [vocab.get(item_token(t)) for t in catalog.tokens]
        self.single_token = bool(ids) and all(v is not None for v in ids)
        self.token_ids = np.array(ids if self.single_token else [], dtype=np.int64)

    def __call__(self, idx: int) -> str:
        t = self.catalog.tokens[idx]
        return item_token(t) if self.single_token else t

    def lookup(self, text: str) -> int | None:
        """Internal index of a written item id (``<i50>`` or ``50``), or ``None``."""
        s = str(text).strip().strip("\"'")
        m = ITEM_TOKEN_RE.fullmatch(s)
        if m:
            s = m.group(1)
        return self._index.get(s)
