"""Constrained decoding at the text level, for models that spell item ids as text.

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

import torch
from transformers import LogitsProcessor


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


class TextConstraint(LogitsProcessor):
    """Greedy decoding restricted to valid answers (see module docstring), per row."""

    def __init__(
        self,
        vocab: VocabIndex,
        words: Sequence[dict[int, str]],
        heads: Sequence[str],
        prompt_width: int,
        k_items: int,
        eos_id: int,
    ):
        self.vocab = vocab
        self.items = [_Items(w) for w in words]
        self.width = prompt_width
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

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, -torch.inf)
        gen = input_ids[:, self.width :].tolist()
        for row, toks in enumerate(gen):
            for t in toks[self.consumed[row] :]:
                if t == self.eos:
                    self.states[row] = [("end", tuple(self.written(row)))]
                    continue
                self.advance(row, self.vocab.texts[t] or "")
            self.consumed[row] = len(toks)
            mask[row, self.allowed(row)] = 0.0
        return scores + mask


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
