"""Prefix trie of item verbalisations for constrained decoding (OpenP5 style).

Each catalogue item is a token sequence (one token for the toolkit's model, the tokenised id for
hub models). Forgotten items are removed from the trie, so decoding cannot spell them; per-request
exclusions (items already written, items outside the candidate list) are applied on top without
copying the trie: a node knows every item below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    items: set[int] = field(default_factory=set)  # items whose sequence passes through
    terminal: int | None = None  # item whose sequence ends here


class ItemTrie:
    """Token-sequence trie over items (internal indices)."""

    def __init__(self, sequences: Mapping[int, Sequence[int]]):
        self.root = _Node()
        self._seqs: dict[int, tuple[int, ...]] = {}
        for item, seq in sequences.items():
            self.add(item, seq)

    def __len__(self) -> int:
        return len(self._seqs)

    def __contains__(self, item: int) -> bool:
        return item in self._seqs

    def add(self, item: int, seq: Sequence[int]) -> None:
        if not seq:
            raise ValueError(f"item {item}: empty token sequence")
        if item in self._seqs:
            self.remove(item)
        node = self.root
        node.items.add(item)
        for t in seq:
            node = node.children.setdefault(int(t), _Node())
            node.items.add(item)
        if node.terminal is not None and node.terminal != item:
            raise ValueError(f"items {node.terminal} and {item} have the same token sequence")
        node.terminal = item
        self._seqs[item] = tuple(int(t) for t in seq)

    def remove(self, item: int) -> None:
        """Drop ``item`` (no-op if absent); empty branches are pruned."""
        seq = self._seqs.pop(item, None)
        if seq is None:
            return
        path = [self.root]
        for t in seq:
            path.append(path[-1].children[t])
        path[-1].terminal = None
        for node in path:
            node.items.discard(item)
        for depth in range(len(seq), 0, -1):
            if not path[depth].items:
                del path[depth - 1].children[seq[depth - 1]]

    def remove_many(self, items: Iterable[int]) -> None:
        for i in items:
            self.remove(int(i))

    def node(self, prefix: Sequence[int]) -> _Node | None:
        node = self.root
        for t in prefix:
            node = node.children.get(int(t))
            if node is None:
                return None
        return node

    def next_tokens(self, prefix: Sequence[int], allowed: set[int] | None = None) -> list[int]:
        """Tokens that extend ``prefix`` towards at least one (allowed) item."""
        node = self.node(prefix)
        if node is None:
            return []
        if allowed is None:
            return list(node.children)
        if len(allowed) < len(node.children):  # walk the (few) allowed items instead
            depth = len(prefix)
            return sorted(
                {
                    self._seqs[i][depth]
                    for i in allowed
                    if i in node.items and len(self._seqs[i]) > depth
                }
            )
        return [t for t, ch in node.children.items() if not ch.items.isdisjoint(allowed)]

    def complete(self, prefix: Sequence[int], allowed: set[int] | None = None) -> int | None:
        """The (allowed) item spelled exactly by ``prefix``, if any."""
        node = self.node(prefix)
        if node is None or node.terminal is None:
            return None
        if allowed is not None and node.terminal not in allowed:
            return None
        return node.terminal
