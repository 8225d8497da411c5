"""Ranking candidates with any Hugging Face causal LM, in three modes.

* ``likelihood`` -- candidates ranked by the model's log-likelihood of writing them as the first
  answer entry. With single-token item ids (the toolkit's model) this is one forward pass per
  user: the next-token distribution restricted to the candidate tokens. Otherwise each
  candidate's spelling is scored (batched, one sequence per candidate).
* ``json`` -- the model writes ``{item_id: score}`` freely (greedy); :func:`parse_ranking`
  validates it (unknown ids, duplicates, forgotten items dropped; fallback to the candidate
  order counted).
* ``constrained`` -- greedy decoding where every item slot is restricted to a prefix trie of the
  catalogue with forgotten items removed (and, by default, to the candidate list); the JSON
  scaffold between items is forced, so the answer always parses.

Whatever the mode and whatever the model prefers, a forgotten item is never returned: it is
removed from the candidates, from the trie and from the parsed answer.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, StoppingCriteria

from llmrec.llm.catalog import Catalog, ItemVerbalizer
from llmrec.llm.lora import TokenizedExample, collate
from llmrec.llm.parsing import ParseReport, parse_ranking, scrub
from llmrec.llm.prompt import PromptBuilder, UserContext, context_limit
from llmrec.llm.trie import ItemTrie
from prompts import ANSWER_OPEN, PromptTemplate, default_template

MODES = ("likelihood", "json", "constrained")


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


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _StopAtBrace(StoppingCriteria):
    """Stop each row once it has written a token containing ``}``."""

    def __init__(self, tokenizer: Any, prompt_width: int):
        vocab = tokenizer.get_vocab()
        ids = [i for t, i in vocab.items() if "}" in tokenizer.convert_tokens_to_string([t])]
        self.stop_ids = torch.tensor(sorted(ids) or [-1])
        self.width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        gen = input_ids[:, self.width :]
        return torch.isin(gen, self.stop_ids.to(gen.device)).any(dim=1)


class _Suppress(LogitsProcessor):
    """Forbid some tokens outright (forgotten items' tokens in free JSON generation)."""

    def __init__(self, token_ids: np.ndarray):
        self.ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.ids.to(scores.device)] = -torch.inf
        return scores


class _RowState:
    __slots__ = ("consumed", "phase", "prefix", "items", "scaffold", "pos")

    def __init__(self) -> None:
        self.consumed = 0
        self.phase = "item"
        self.prefix: list[int] = []
        self.items: list[int] = []
        self.scaffold: list[int] = []
        self.pos = 0


class AnswerConstraint(LogitsProcessor):
    """Forces ``item": score, "item": score}`` with items from a trie (greedy decoding).

    Per row, item slots may only spell items of the trie that are in ``allowed[row]`` and not yet
    written; after ``k_items`` items (or when none is left) the object is closed and EOS forced.
    """

    def __init__(
        self,
        trie: ItemTrie,
        allowed: Sequence[set[int] | None],
        tokenizer: Any,
        prompt_width: int,
        k_items: int,
        eos_id: int,
    ):
        self.trie = trie
        self.allowed = [None if a is None else set(a) for a in allowed]
        self.width = prompt_width
        self.k = k_items
        self.eos = eos_id
        enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.mid = [enc(f'": {max(1, 10 - j)}, "') for j in range(k_items)]
        self.final = [enc(f'": {max(1, 10 - j)}}}') for j in range(k_items)]
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

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, -torch.inf)
        gen = input_ids[:, self.width :].tolist()
        for row, toks in enumerate(gen):
            st = self.states[row]
            if len(toks) < st.consumed:  # a new generation reused the processor
                st = self.states[row] = _RowState()
            for t in toks[st.consumed :]:
                self._advance(row, st, int(t))
            st.consumed = len(toks)
            mask[row, self.allowed_tokens(row, st)] = 0.0
        return scores + mask


class Generator:
    """A causal LM (any ``AutoModelForCausalLM``), optionally with LoRA adapters, as a ranker."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        catalog: Catalog,
        template: PromptTemplate | str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        top_k: int = 10,
        max_prompt_tokens: int | None = None,
        merged: dict[str, Any] | None = None,
    ):
        self.device = resolve_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        self.merged = {k: m.to(self.device).eval() for k, m in (merged or {}).items()}
        self.active = self.model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.catalog = catalog
        self.verbalizer = ItemVerbalizer(catalog, tokenizer.get_vocab())
        if template is None:
            template = default_template(self.verbalizer.single_token)
        limit = max_prompt_tokens or context_limit(tokenizer, model.config)
        self.builder = PromptBuilder(template, catalog, self.verbalizer, tokenizer, top_k, limit)
        self.batch_size = batch_size
        self.top_k = top_k
        self.max_prompt_tokens = limit
        self._trie: ItemTrie | None = None
        self._trie_removed: frozenset[int] = frozenset()
        self.stats: dict[str, float] = {"users": 0, "seconds": 0.0, "fallbacks": 0}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        catalog: Catalog,
        adapters: dict[str, str | Path] | None = None,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        merge: bool | None = None,
        **kwargs: Any,
    ) -> Generator:
        """Load a hub id or local folder (and named peft adapters) onto ``device``.

        ``merge``: serve one merged copy of the model per adapter (no adapter arithmetic per
        step: several times faster for small models); default: merge when the base model has
        fewer than 100M parameters, otherwise switch adapters on one peft model.
        """
        dev = resolve_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
        if not adapters:
            return cls(model, tok, catalog, device=dev, **kwargs)
        from peft import PeftModel

        if merge is None:
            merge = sum(p.numel() for p in model.parameters()) < 100_000_000
        if merge:
            merged = {
                name: PeftModel.from_pretrained(copy.deepcopy(model), str(path)).merge_and_unload()
                for name, path in adapters.items()
            }
            return cls(model, tok, catalog, device=dev, merged=merged, **kwargs)
        from llmrec.llm.lora import load_adapters

        return cls(load_adapters(model, adapters), tok, catalog, device=dev, **kwargs)

    @property
    def adapters(self) -> list[str]:
        if self.merged:
            return list(self.merged)
        return list(getattr(self.model, "peft_config", {}) or {})

    def _adapter_ctx(self, adapter: str | None):
        """Context selecting ``adapter`` (``None``: the base model, adapters disabled)."""
        import contextlib

        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"adapter {adapter!r} requested but the model has {self.adapters}")
        if self.merged or not self.adapters:
            self.active = self.model if adapter is None else self.merged[adapter]
            return contextlib.nullcontext()
        self.active = self.model
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ public API
    def rank(
        self,
        contexts: Sequence[UserContext],
        mode: str = "likelihood",
        forgotten: np.ndarray | None = None,
        adapter: str | None = None,
        scope: str = "candidates",
    ) -> list[Ranking]:
        """Rank each context's candidates. ``forgotten``: bool mask of items never to output.

        ``scope`` (constrained mode): ``candidates`` restricts item slots to the candidate list,
        ``catalog`` to the whole catalogue minus forgotten items and the user's history.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        forgotten = (
            np.zeros(len(self.catalog), dtype=bool)
            if forgotten is None
            else np.asarray(forgotten, dtype=bool)
        )
        clean = [
            UserContext(
                c.user,
                c.attributes,
                c.history_items,
                c.history_ratings,
                np.asarray(c.candidates, dtype=np.int64)[
                    ~forgotten[np.asarray(c.candidates, dtype=np.int64)]
                ],
            )
            for c in contexts
        ]
        t0 = time.perf_counter()
        out: list[Ranking] = []
        with torch.no_grad(), self._adapter_ctx(adapter):
            for s in range(0, len(clean), self.batch_size):
                batch = clean[s : s + self.batch_size]
                if mode == "likelihood":
                    out += self._likelihood(batch)
                elif mode == "json":
                    out += self._generate(batch, forgotten, constrained=False)
                else:
                    out += self._generate(batch, forgotten, constrained=True, scope=scope)
        for r in out:  # defence in depth: nothing forgotten leaves this method
            keep = ~forgotten[r.items] if len(r.items) else np.zeros(0, bool)
            r.items, r.scores = r.items[keep], r.scores[keep]
        self.stats["users"] += len(out)
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["fallbacks"] += sum(r.fallback for r in out)
        return out

    # ------------------------------------------------------------------ internals
    def _encode(self, batch: Sequence[UserContext], reserve: int | None = None) -> list[list[int]]:
        """Token ids of the prompts under the prompt contract (:meth:`PromptBuilder.encode`)."""
        return [self.builder.encode(c, reserve).ids for c in batch]

    def _forward_last(self, ids: list[list[int]]) -> torch.Tensor:
        inputs = collate([TokenizedExample(i, 0, []) for i in ids], self.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        logits = self.active(**inputs, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def _likelihood(self, batch: Sequence[UserContext]) -> list[Ranking]:
        ids = self._encode(batch)
        if self.verbalizer.single_token:
            logp = self._forward_last(ids).cpu().numpy()
            scores = [logp[k, self.verbalizer.token_ids[c.candidates]] for k, c in enumerate(batch)]
        else:
            scores = [self._sequence_scores(p, c.candidates) for p, c in zip(ids, batch)]
        out = []
        for c, sc in zip(batch, scores):
            order = np.argsort(-sc, kind="stable")
            out.append(
                Ranking(c.user, c.candidates[order], sc[order].astype(np.float64), "likelihood")
            )
        return out

    def _item_ids(self, idx: int) -> list[int]:
        """Token ids of an item's spelling as the first answer entry (closing quote included)."""
        text = self.verbalizer(int(idx)) + '"'
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _sequence_scores(self, prompt: list[int], candidates: np.ndarray) -> np.ndarray:
        """Sum of log-probabilities of each candidate's spelling after ``prompt``."""
        conts = [self._item_ids(int(c)) for c in candidates]
        scores = np.zeros(len(candidates))
        for s in range(0, len(conts), self.batch_size):
            chunk = conts[s : s + self.batch_size]
            exs = [TokenizedExample(prompt + c, len(c), []) for c in chunk]
            inputs = collate(exs, self.tokenizer.pad_token_id)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            keep = max(len(c) for c in chunk) + 1
            logp = torch.log_softmax(self.active(**inputs, logits_to_keep=keep).logits.float(), -1)
            for k, c in enumerate(chunk):
                rows = logp[k, keep - len(c) - 1 : keep - 1]
                scores[s + k] = float(
                    rows.gather(1, torch.tensor(c, device=rows.device)[:, None]).sum()
                )
        return scores

    def trie(self, forgotten: np.ndarray) -> ItemTrie:
        """Catalogue trie with ``forgotten`` items removed (cached per forgotten set)."""
        removed = frozenset(np.flatnonzero(forgotten).tolist())
        if self._trie is None:
            seqs = {
                i: (
                    [int(self.verbalizer.token_ids[i])]
                    if self.verbalizer.single_token
                    else self._item_ids(i)[:-1] or self._item_ids(i)
                )
                for i in range(len(self.catalog))
            }
            self._trie = ItemTrie(seqs)
        if not self._trie_removed <= removed:  # the cached trie lacks items now allowed
            self._trie, self._trie_removed = None, frozenset()
            return self.trie(forgotten)
        self._trie.remove_many(removed - self._trie_removed)
        self._trie_removed = removed
        return self._trie

    def _generate(
        self,
        batch: Sequence[UserContext],
        forgotten: np.ndarray,
        constrained: bool,
        scope: str = "candidates",
    ) -> list[Ranking]:
        budget = self.builder.answer_reserve()
        ids = self._encode(batch)
        inputs = collate([TokenizedExample(i, 0, []) for i in ids], self.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        width = inputs["input_ids"].shape[1]
        kwargs: dict[str, Any] = {}
        mode = "constrained" if constrained else "json"
        if constrained:
            if scope == "candidates":
                allowed = [set(c.candidates.tolist()) for c in batch]
            else:
                allowed = [
                    set(np.flatnonzero(~forgotten).tolist()) - set(c.history_items.tolist())
                    for c in batch
                ]
            k = max(1, min(self.top_k, max(len(a) for a in allowed)))
            proc = AnswerConstraint(
                self.trie(forgotten), allowed, self.tokenizer, width, k, self.tokenizer.eos_token_id
            )
            kwargs["logits_processor"] = [proc]
        else:
            kwargs["stopping_criteria"] = [_StopAtBrace(self.tokenizer, width)]
            if self.verbalizer.single_token and forgotten.any():
                banned = self.verbalizer.token_ids[np.flatnonzero(forgotten)]
                kwargs["logits_processor"] = [_Suppress(banned)]
        gen = self.active.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=budget,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **kwargs,
        )
        out = []
        for k, c in enumerate(batch):
            text = ANSWER_OPEN + self.tokenizer.decode(gen[k, width:], skip_special_tokens=True)
            cands = c.candidates
            if constrained and scope == "catalog":
                cands = np.array(
                    proc.states[k].items
                    + [int(i) for i in c.candidates if int(i) not in proc.states[k].items],
                    dtype=np.int64,
                )
            items, scores, rep = parse_ranking(text, cands, self.verbalizer.lookup, forgotten)
            text = scrub(text, self.verbalizer.lookup, forgotten) if rep.forgotten else text
            out.append(Ranking(c.user, items, scores, mode, rep.fallback, rep, text))
        return out
