"""Constrained decoding: which tokens may continue a valid answer, independent of any engine.

Both automata answer :meth:`allowed_after` -- the tokens a row may write next, given what it has
written so far -- so a serving backend applies them with its own mechanism (a Hugging Face
logits processor, a vLLM logits processor, ...). :class:`AnswerSpelling` holds the answer's
in-context token spellings (items, JSON scaffold) both are built from.

Single-token ids (the toolkit's model): :class:`AnswerConstraint` forces
``item": score, "item": score}`` with item slots from an :class:`~llmrec.llm.trie.ItemTrie`.

Ids spelled as text:

A real tokenizer merges an id with the JSON around it (``▁{"5`` ``1":``), so no fixed token
sequence per item is "the" spelling: the in-context tokenisation of an answer depends on its
neighbours. :class:`TextConstraint` therefore constrains the *text*: a token is allowed iff the
answer written so far plus that token's text (as the tokenizer decodes it in context) is still a
prefix of a valid answer ``{"id": 10, "id2": 9, ..., "idk": N}`` over the allowed items, each at
most once. Every tokenisation of a valid answer is reachable -- the one the model was tuned on
included -- and nothing else: the output always parses to exact candidate ids.

The prompt is *healed*: generation starts at the last token boundary that every candidate's
in-context tokenisation shares with the prompt (:meth:`PromptBuilder.continuations`), and the
constraint first forces the rest of the prompt's text (typically `` {"``), so the first item can
be written with the same merged tokens as in the tuning data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from llmrec.llm.catalog import ItemVerbalizer
from llmrec.llm.prompt import PromptBuilder, span_tokens
from llmrec.llm.trie import ItemTrie


class VocabIndex:
    """Every token's text as decoded in context, in a character trie."""

    def __init__(self, tokenizer: Any):
        special = set(tokenizer.all_special_ids)
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
        base = tokenizer.decode([anchor], clean_up_tokenization_spaces=False)
        n = len(tokenizer)
        pairs = tokenizer.batch_decode(
            [[anchor, t] for t in range(n)], clean_up_tokenization_spaces=False
        )
        self.texts: list[str | None] = []
        self.root: dict = {}
        for t, p in enumerate(pairs):
            text = p[len(base) :] if p.startswith(base) else None
            if t in special or not text or "\ufffd" in text:
                text = None
            self.texts.append(text)
            if text is None:
                continue
            node = self.root
            for ch in text:
                node = node.setdefault(ch, {})
            node.setdefault("", []).append(t)


class _Items:
    """Character trie of the items a row may write (value: item index at the end of its id)."""

    def __init__(self, words: dict[int, str]):
        self.root: dict = {}
        for item, w in words.items():
            node = self.root
            for ch in w:
                node = node.setdefault(ch, {})
            node[""] = item


# answer states: ("fixed", remaining text, slot, written, then_item) | ("item", node, slot,
# written, prefix) | ("end", written)
State = tuple


class TextConstraint:
    """Greedy decoding restricted to valid answers (see module docstring), per row."""

    def __init__(
        self,
        vocab: VocabIndex,
        words: Sequence[dict[int, str]],
        heads: Sequence[str],
        k_items: int,
        eos_id: int,
    ):
        self.vocab = vocab
        self.items = [_Items(w) for w in words]
        self.k = k_items
        self.eos = eos_id
        self.sizes = [len(w) for w in words]
        self.states: list[list[State]] = [
            [("fixed", h, 0, (), True)] if h else [("item", it.root, 0, (), "")]
            for h, it in zip(heads, self.items)
        ]
        self.consumed = [0] * len(words)

    # ------------------------------------------------------------------ automaton
    def _after_item(self, row: int, slot: int, written: tuple[int, ...]) -> State:
        score = max(1, 10 - slot)
        last = slot + 1 >= self.k or len(written) >= self.sizes[row]
        if last:
            return ("fixed", f'": {score}}}', slot, written, False)
        return ("fixed", f'": {score}, "', slot + 1, written, True)

    def _step(self, row: int, st: State, ch: str) -> list[State]:
        kind = st[0]
        if kind == "end":
            return []
        if kind == "fixed":
            _, rem, slot, written, then_item = st
            if rem[0] != ch:
                return []
            rem = rem[1:]
            if rem:
                return [("fixed", rem, slot, written, then_item)]
            if then_item:
                return [("item", self.items[row].root, slot, written, "")]
            return [("end", written)]
        _, node, slot, written, prefix = st
        out: list[State] = []
        child = node.get(ch)
        if child is not None and _open(child, written):
            out.append(("item", child, slot, written, prefix + ch))
        item = node.get("")
        if item is not None and item not in written:
            out += self._step(row, self._after_item(row, slot, written + (item,)), ch)
        return out

    def advance(self, row: int, text: str) -> None:
        states = self.states[row]
        for ch in text:
            states = [s for st in states for s in self._step(row, st, ch)]
        self.states[row] = states

    def allowed(self, row: int) -> list[int]:
        states = self.states[row]
        out: list[int] = []
        if any(s[0] == "end" for s in states):
            out.append(self.eos)
        stack = [(self.vocab.root, states)]
        while stack:
            node, sts = stack.pop()
            for ch, child in node.items():
                if ch == "":
                    continue
                nxt = [s for st in sts for s in self._step(row, st, ch)]
                if nxt:
                    out.extend(child.get("", ()))
                    stack.append((child, nxt))
        return out or [self.eos]

    def written(self, row: int) -> list[int]:
        """Items written so far by ``row`` (in order)."""
        best: tuple[int, ...] = ()
        for st in self.states[row]:
            w = st[1] if st[0] == "end" else st[3]
            if len(w) > len(best):
                best = w
        return list(best)

    def allowed_after(self, row: int, toks: Sequence[int]) -> list[int]:
        """Tokens ``row`` may write after having written ``toks``."""
        for t in toks[self.consumed[row] :]:
            if t == self.eos:
                self.states[row] = [("end", tuple(self.written(row)))]
                continue
            self.advance(row, self.vocab.texts[t] or "")
        self.consumed[row] = len(toks)
        return self.allowed(row)


def _open(node: dict, written: Iterable[int]) -> bool:
    """Whether some item below ``node`` is not written yet."""
    w = set(written)
    stack = [node]
    while stack:
        n = stack.pop()
        for ch, v in n.items():
            if ch == "":
                if v not in w:
                    return True
            else:
                stack.append(v)
    return False


class AnswerSpelling:
    """In-context token spellings of an answer for one prompt builder: every item's tokens as
    written inside an answer (after ``{"``, before ``"``), the JSON scaffold between and after
    items, and the catalogue trie (cached per forgotten set)."""

    def __init__(self, builder: PromptBuilder, verbalizer: ItemVerbalizer, tokenizer: Any):
        self.builder = builder
        self.verbalizer = verbalizer
        self.tokenizer = tokenizer
        self._trie: ItemTrie | None = None
        self._trie_removed: frozenset[int] = frozenset()
        self._item_seqs: list[list[int]] | None = None
        self._scaffolds: tuple[list[list[int]], list[list[int]]] | None = None
        self._vocab: VocabIndex | None = None

    def item_sequences(self) -> list[list[int]]:
        """Every item's token ids as written inside an answer, from the tokenised answer text
        itself; an item the tokenizer merges with the quotes falls back to its own
        tokenisation."""
        if self._item_seqs is None:
            if self.verbalizer.single_token:
                self._item_seqs = [[int(t)] for t in self.verbalizer.token_ids]
            else:
                n = len(self.builder.catalog)
                words = [self.verbalizer(i) for i in range(n)]
                lead = self.builder.template.answer_prefix
                texts = [f'{lead}{w}": 10}}' for w in words]
                spans = [(len(lead), len(lead) + len(w)) for w in words]
                got = span_tokens(self.tokenizer, texts, spans)
                alone = self.tokenizer(words, add_special_tokens=False)["input_ids"]
                self._item_seqs = [g if g else list(a) for g, a in zip(got, alone)]
        return self._item_seqs

    def scaffolds(self, k: int) -> tuple[list[list[int]], list[list[int]]]:
        """In-context tokens of ``": 10, "`` (between items) and ``": 10}`` (closing)."""
        if self._scaffolds is None or len(self._scaffolds[0]) < k:
            n = len(self.builder.catalog)
            a, b = self.verbalizer(0), self.verbalizer(min(1, n - 1))
            lead = self.builder.template.answer_prefix
            mids, finals = [], []
            for j in range(k):
                score = max(1, 10 - j)
                mid, fin = f'": {score}, "', f'": {score}}}'
                t_mid, t_fin = lead + a + mid + b + '"', lead + a + fin
                s0 = len(lead) + len(a)
                got = span_tokens(
                    self.tokenizer, [t_mid, t_fin], [(s0, s0 + len(mid)), (s0, s0 + len(fin))]
                )
                enc = lambda x: self.tokenizer(x, add_special_tokens=False)["input_ids"]  # noqa: E731
                mids.append(got[0] or enc(mid))
                finals.append(got[1] or enc(fin))
            self._scaffolds = (mids, finals)
        return self._scaffolds[0][:k], self._scaffolds[1][:k]

    def trie(self, forgotten: np.ndarray) -> ItemTrie:
        """Catalogue trie with ``forgotten`` items removed (cached per forgotten set)."""
        removed = frozenset(np.flatnonzero(forgotten).tolist())
        if self._trie is None:
            self._trie = ItemTrie(dict(enumerate(self.item_sequences())))
        if not self._trie_removed <= removed:  # the cached trie lacks items now allowed
            self._trie, self._trie_removed = None, frozenset()
            return self.trie(forgotten)
        self._trie.remove_many(removed - self._trie_removed)
        self._trie_removed = removed
        return self._trie

    def vocab_index(self) -> VocabIndex:
        if self._vocab is None:
            self._vocab = VocabIndex(self.tokenizer)
        return self._vocab


class _RowState:
    __slots__ = ("consumed", "phase", "prefix", "items", "scaffold", "pos")

    def __init__(self) -> None:
        self.consumed = 0
        self.phase = "item"
        self.prefix: list[int] = []
        self.items: list[int] = []
        self.scaffold: list[int] = []
        self.pos = 0


class AnswerConstraint:
    """Forces ``item": score, "item": score}`` with items from a trie (greedy decoding).

    Per row, item slots may only spell items of the trie that are in ``allowed[row]`` and not yet
    written; after ``k_items`` items (or when none is left) the object is closed and EOS forced.
    """

    def __init__(
        self,
        trie: ItemTrie,
        allowed: Sequence[set[int] | None],
        scaffolds: tuple[list[list[int]], list[list[int]]],
        k_items: int,
        eos_id: int,
    ):
        """``scaffolds``: the in-context tokens between item ``j`` and the next one
        (``": 10, "``) and after the last one (``": 10}``), for ``j < k_items``."""
        self.trie = trie
        self.allowed = [None if a is None else set(a) for a in allowed]
        self.k = k_items
        self.eos = eos_id
        self.mid, self.final = scaffolds
        self.states = [_RowState() for _ in allowed]

    def _remaining(self, row: int, st: _RowState) -> set[int] | None:
        a = self.allowed[row]
        if a is None:
            return None
        return a.difference(st.items)

    def _closing(self, row: int, st: _RowState, item: int) -> list[int]:
        j = len(st.items)  # index of the item being completed
        rem = self._remaining(row, st)
        left = None if rem is None else rem - {item}
        if j + 1 >= self.k or (left is not None and not left):
            return self.final[j]
        return self.mid[j]

    def _advance(self, row: int, st: _RowState, tok: int) -> None:
        if st.phase == "item":
            ext = st.prefix + [tok]
            if self.trie.node(ext) is not None:
                st.prefix = ext
                return
            item = self.trie.complete(st.prefix)
            if item is None:  # cannot happen under the mask; end the answer defensively
                st.phase = "done"
                return
            st.scaffold = self._closing(row, st, item)
            st.items.append(item)
            st.prefix = []
            st.phase, st.pos = "scaffold", 1
        else:
            st.pos += 1
        if st.phase == "scaffold" and st.pos >= len(st.scaffold):
            final = len(st.items) >= self.k or st.scaffold == self.final[len(st.items) - 1]
            st.phase = "done" if final else "item"

    def allowed_tokens(self, row: int, st: _RowState) -> list[int]:
        if st.phase == "done":
            return [self.eos]
        if st.phase == "scaffold":
            return [st.scaffold[st.pos]]
        rem = self._remaining(row, st)
        out = self.trie.next_tokens(st.prefix, rem)
        item = self.trie.complete(st.prefix, rem)
        if item is not None:
            out.append(self._closing(row, st, item)[0])
        return out or [self.eos]

    def allowed_after(self, row: int, toks: Sequence[int]) -> list[int]:
        """Tokens ``row`` may write after having written ``toks``."""
        st = self.states[row]
        if len(toks) < st.consumed:  # a new generation reused the constraint
            st = self.states[row] = _RowState()
        for t in toks[st.consumed :]:
            self._advance(row, st, int(t))
        st.consumed = len(toks)
        return self.allowed_tokens(row, st)

    def written(self, row: int) -> list[int]:
        """Items written so far by ``row`` (in order)."""
        return list(self.states[row].items)
