"""Ranking candidates with any Hugging Face causal LM, in four modes.

Prompts follow the prompt contract of :class:`llmrec.llm.prompt.PromptBuilder` (the template
and chat template the adapters were tuned with, BOS where the tokenizer adds it, history filled
to the model's true context length); answers are tokenised in context.

* ``likelihood`` -- candidates ranked by the model's log-likelihood of writing them as the first
  answer entry. With single-token item ids (the toolkit's model) this is one forward pass per
  user: the next-token distribution restricted to the candidate tokens. Otherwise each
  candidate's spelling is scored as it tokenises inside the full prompt+answer, on copies of
  the prompt's KV cache (the prompt runs once per user, not once per candidate).
* ``verbalizer`` -- LlamaRec style: the candidates are listed under index labels (``A``, ``B``,
  ...) and ranked from one next-token distribution over the labels.
* ``json`` -- the model writes ``{item_id: score}`` itself (greedy: ids, scores, separators and
  where to stop); :func:`parse_ranking` validates it (unknown ids, duplicates, forgotten items
  dropped; fallback to the candidate order counted). With single-token ids the item tokens the
  model may write are the candidates it has not written yet (``json_items="candidates"``, the
  default; ``"free"``: every non-forgotten item); the JSON text is the model's own.
* ``constrained`` -- greedy decoding restricted to valid answers over the candidates (or the
  catalogue) minus forgotten items: item slots follow a token trie for single-token ids and a
  text-level constraint (:mod:`llmrec.llm.constrained`) for ids spelled as text, with the JSON
  scaffold forced, so the answer always parses to exact ids.

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
from transformers import LogitsProcessor, StoppingCriteria

from llmrec.llm.catalog import Catalog, ItemVerbalizer
from llmrec.llm.constrained import TextConstraint, VocabIndex
from llmrec.llm.loading import LoadOptions, ensure_pad, load_model, load_tokenizer, resolve_base
from llmrec.llm.lora import TokenizedExample, collate
from llmrec.llm.parsing import ParseReport, parse_ranking, scrub
from llmrec.llm.prompt import EncodedPrompt, PromptBuilder, UserContext, context_limit, span_tokens
from llmrec.llm.trie import ItemTrie
from prompts import ANSWER_OPEN, PromptTemplate, default_template

MODES = ("likelihood", "json", "constrained")
RANK_MODES = MODES + ("verbalizer",)  # verbalizer: candidates under index labels (LlamaRec)


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

    def __init__(self, vocab: VocabIndex, prompt_width: int):
        ids = [i for i, t in enumerate(vocab.texts) if t is not None and "}" in t]
        self.stop_ids = torch.tensor(ids or [-1])
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


class _CandidateItems(LogitsProcessor):
    """Free JSON generation over single-token ids: at every step an item token may only be a
    candidate of the row not yet written; every other token (the JSON text) is the model's.
    One ``[rows, vocabulary]`` ban mask per batch, updated with each step's written item."""

    def __init__(
        self, item_ids: np.ndarray, allowed: Sequence[np.ndarray], prompt_width: int, vocab: int
    ):
        items = torch.as_tensor(np.asarray(item_ids, dtype=np.int64))
        self.is_item = torch.zeros(vocab, dtype=torch.bool)
        self.is_item[items] = True
        self.ban = self.is_item.repeat(len(allowed), 1)
        for row, a in enumerate(allowed):
            self.ban[row, torch.as_tensor(np.asarray(a, dtype=np.int64))] = False
        self.width = prompt_width
        self.seen = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ban = self.ban.to(scores.device)
        for step in range(self.seen, input_ids.shape[1]):  # tokens written since the last call
            tok = input_ids[:, step].to(ban.device)
            rows = self.is_item.to(ban.device)[tok].nonzero().flatten()
            ban[rows, tok[rows]] = True
        self.seen, self.ban = input_ids.shape[1], ban
        width = min(scores.shape[1], ban.shape[1])
        out = scores.clone()
        out[:, :width] = scores[:, :width].masked_fill(ban[:, :width], -torch.inf)
        return out


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
        scaffolds: tuple[list[list[int]], list[list[int]]],
        prompt_width: int,
        k_items: int,
        eos_id: int,
    ):
        """``scaffolds``: the in-context tokens between item ``j`` and the next one
        (``": 10, "``) and after the last one (``": 10}``), for ``j < k_items``."""
        self.trie = trie
        self.allowed = [None if a is None else set(a) for a in allowed]
        self.width = prompt_width
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
    """A causal LM (any ``AutoModelForCausalLM``), optionally with LoRA adapters, as a ranker.

    ``kv_cache`` (likelihood with multi-token ids): run the prompt once and score every
    candidate's continuation on copies of its KV cache (default) instead of recomputing the
    prompt for each candidate.
    """

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
        kv_cache: bool = True,
        json_items: str = "candidates",
    ):
        placed = getattr(model, "hf_device_map", None) is not None
        if placed:  # dispatched by a device map: leave it where it is
            self.device = next(model.parameters()).device
            self.model = model.eval()
        else:
            self.device = resolve_device(str(device) if device is not None else None)
            self.model = model.to(self.device).eval()
        self.merged = {k: m.to(self.device).eval() for k, m in (merged or {}).items()}
        self.active = self.model
        self.tokenizer = ensure_pad(tokenizer)
        self.catalog = catalog
        self.verbalizer = ItemVerbalizer(catalog, tokenizer.get_vocab())
        if template is None:
            template = default_template(self.verbalizer.single_token)
        limit = max_prompt_tokens or context_limit(tokenizer, model.config)
        self.builder = PromptBuilder(template, catalog, self.verbalizer, tokenizer, top_k, limit)
        self.batch_size = batch_size
        self.top_k = top_k
        self.max_prompt_tokens = limit
        self.kv_cache = kv_cache
        if json_items not in ("candidates", "free"):
            raise ValueError(f"json_items must be 'candidates' or 'free', got {json_items!r}")
        self.json_items = json_items
        self._trie: ItemTrie | None = None
        self._trie_removed: frozenset[int] = frozenset()
        self._item_seqs: list[list[int]] | None = None
        self._scaffolds: tuple[list[list[int]], list[list[int]]] | None = None
        self._vocab: VocabIndex | None = None
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
        device_map: str | dict | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        **kwargs: Any,
    ) -> Generator:
        """Load a local folder or a cached hub id (and named peft adapters), from local files.

        ``dtype``: a ``torch.dtype`` or ``auto|float32|bfloat16|float16`` (default: bfloat16 on
        CUDA, float32 on CPU); ``device_map`` (e.g. ``"auto"``), ``attn_implementation`` and
        ``trust_remote_code`` go to ``from_pretrained``. ``merge``: serve one merged copy of
        the model per adapter (no adapter arithmetic per step: several times faster for small
        models); default: merge when the base model has fewer than 100M parameters and no
        device map is used, otherwise switch adapters on one peft model.
        """
        dev = resolve_device(device) if device_map is None else None
        if dtype is None:
            dtype = "bfloat16" if dev is not None and dev.type == "cuda" else "float32"
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        opts = LoadOptions(
            dtype=dtype,
            device_map=device_map if isinstance(device_map, str) or device_map is None else None,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            revision=revision,
        )
        base = resolve_base(name_or_path)
        tok = load_tokenizer(base, opts)
        model = load_model(base, opts, device=None if dev is None else str(dev))
        if not adapters:
            return cls(model, tok, catalog, device=dev, **kwargs)
        from peft import PeftModel

        if merge is None:
            small = sum(p.numel() for p in model.parameters()) < 100_000_000
            merge = small and device_map is None
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
        ``mode`` ``verbalizer``: candidates are written under index labels and ranked from the
        next-token distribution over the labels (LlamaRec).
        """
        if mode not in RANK_MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(RANK_MODES)}")
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
                elif mode == "verbalizer":
                    out += [self._verbalized(c) for c in batch]
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

    def prompt(self, ctx: UserContext, mode: str = "likelihood") -> EncodedPrompt:
        """The prompt served for ``ctx`` in ``mode`` (text and token ids)."""
        if mode == "verbalizer":
            return self.builder.encode(ctx, labels=self.labels(len(ctx.candidates)))
        return self.builder.encode(ctx)

    # ------------------------------------------------------------------ likelihood
    def _forward_last(self, ids: list[list[int]]) -> torch.Tensor:
        inputs = collate([TokenizedExample(i, 0, []) for i in ids], self.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        logits = self.active(**inputs, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def _likelihood(self, batch: Sequence[UserContext]) -> list[Ranking]:
        encs = [self.builder.encode(c) for c in batch]
        if self.verbalizer.single_token:
            logp = self._forward_last([e.ids for e in encs]).cpu().numpy()
            scores = [logp[k, self.verbalizer.token_ids[c.candidates]] for k, c in enumerate(batch)]
        else:
            scores = [
                self.continuation_scores(e, [self.verbalizer(int(i)) + '"' for i in c.candidates])
                for e, c in zip(encs, batch)
            ]
        return [_ranked(c, sc, "likelihood") for c, sc in zip(batch, scores)]

    def continuation_scores(self, prompt: EncodedPrompt, suffixes: Sequence[str]) -> np.ndarray:
        """Log-likelihood of ``prompt.text + s`` after the shared prefix, for every suffix,
        with the suffixes tokenised in context (:meth:`PromptBuilder.continuations`)."""
        if not suffixes:
            return np.zeros(0)
        cut, tails = self.builder.continuations(prompt, suffixes)
        prefix = prompt.ids[:cut]
        if self.kv_cache and prefix:
            return self._scores_cached(prefix, tails)
        return self._scores_recomputed(prefix, tails)

    def _scores_cached(self, prefix: list[int], tails: list[list[int]]) -> np.ndarray:
        """The prompt once; every continuation on a copy of its KV cache."""
        ids = torch.tensor([prefix], device=self.device)
        out = self.active(input_ids=ids, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        cache_arg = _cache_argument(self.active)
        cache = out[cache_arg]
        n = len(prefix)
        scores = np.zeros(len(tails))
        chunk = max(1, self.batch_size * 4)
        pad = self.tokenizer.pad_token_id
        for s in range(0, len(tails), chunk):
            part = tails[s : s + chunk]
            b, width = len(part), max(len(t) for t in part)
            total = torch.tensor([float(first[t[0]]) for t in part])
            if width > 1:
                cont = torch.full((b, width - 1), pad, dtype=torch.long)
                mask = torch.zeros((b, n + width - 1), dtype=torch.long)
                mask[:, :n] = 1
                for k, t in enumerate(part):
                    cont[k, : len(t) - 1] = torch.tensor(t[:-1])
                    mask[k, n : n + len(t) - 1] = 1
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(b)
                pos = torch.arange(n, n + width - 1)[None].expand(b, -1)
                logits = self.active(
                    input_ids=cont.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=pos.to(self.device),
                    use_cache=True,
                    **{cache_arg: kv},
                ).logits
                logp = torch.log_softmax(logits.float(), -1).cpu()
                for k, t in enumerate(part):
                    if len(t) > 1:
                        tgt = torch.tensor(t[1:])
                        total[k] += logp[k, : len(t) - 1].gather(1, tgt[:, None]).sum()
            scores[s : s + b] = total.numpy()
        return scores

    def _scores_recomputed(self, prefix: list[int], tails: list[list[int]]) -> np.ndarray:
        """Every continuation with the whole prompt recomputed (reference path)."""
        scores = np.zeros(len(tails))
        for s in range(0, len(tails), self.batch_size):
            chunk = tails[s : s + self.batch_size]
            exs = [TokenizedExample(prefix + c, len(c), []) for c in chunk]
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

    # ------------------------------------------------------------------ verbalizer
    def labels(self, n: int) -> list[str]:
        """Index labels of ``n`` candidates: ``A``..``Z``, ``a``..``z``, then numbers."""
        letters = [chr(c) for c in range(65, 91)] + [chr(c) for c in range(97, 123)]
        return [letters[k] if k < len(letters) else str(k + 1) for k in range(n)]

    def _verbalized(self, ctx: UserContext) -> Ranking:
        labels = self.labels(len(ctx.candidates))
        enc = self.builder.encode(ctx, labels=labels)
        cut, tails = self.builder.continuations(enc, [lab + '"' for lab in labels])
        firsts = [t[0] for t in tails if t]
        if cut == len(enc.ids) and len(firsts) == len(tails) and len(set(firsts)) == len(tails):
            logp = self._forward_last([enc.ids])[0].cpu().numpy()
            scores = logp[np.asarray(firsts, dtype=np.int64)].astype(np.float64)
        else:  # a label is not one distinct token here: score the labels' spellings
            scores = self.continuation_scores(enc, [lab + '"' for lab in labels])
        return _ranked(ctx, scores, "verbalizer")

    # ------------------------------------------------------------------ constrained decoding
    def item_sequences(self) -> list[list[int]]:
        """Every item's token ids as written inside an answer (after ``{"``, before ``"``),
        from the tokenised answer text itself; an item the tokenizer merges with the quotes
        falls back to its own tokenisation."""
        if self._item_seqs is None:
            if self.verbalizer.single_token:
                self._item_seqs = [[int(t)] for t in self.verbalizer.token_ids]
            else:
                words = [self.verbalizer(i) for i in range(len(self.catalog))]
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
            a, b = self.verbalizer(0), self.verbalizer(min(1, len(self.catalog) - 1))
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

    def _generate(
        self,
        batch: Sequence[UserContext],
        forgotten: np.ndarray,
        constrained: bool,
        scope: str = "candidates",
    ) -> list[Ranking]:
        budget = self.builder.answer_reserve()
        encs = [self.builder.encode(c) for c in batch]
        ids = [e.ids for e in encs]
        heads = [""] * len(batch)
        textual = constrained and not self.verbalizer.single_token
        if textual:  # heal: start where every candidate's in-context spelling parts
            for k, (e, c) in enumerate(zip(encs, batch)):
                words = [self.verbalizer(int(i)) + '"' for i in c.candidates]
                cut, _ = self.builder.continuations(e, words) if words else (len(e.ids), [])
                if 0 < cut < len(e.ids):
                    heads[k] = self._decode_after(e.ids[:cut], e.ids[cut:])
                    ids[k] = e.ids[:cut]
        inputs = collate([TokenizedExample(i, 0, []) for i in ids], self.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        width = inputs["input_ids"].shape[1]
        kwargs: dict[str, Any] = {}
        mode = "constrained" if constrained else "json"
        eos = self.tokenizer.eos_token_id
        if eos is None:
            eos = self.tokenizer.pad_token_id
        if constrained:
            if scope == "candidates":
                allowed = [set(c.candidates.tolist()) for c in batch]
            else:
                allowed = [
                    set(np.flatnonzero(~forgotten).tolist()) - set(c.history_items.tolist())
                    for c in batch
                ]
            k = max(1, min(self.top_k, max(len(a) for a in allowed)))
            if textual:
                words = [{i: self.verbalizer(i) for i in sorted(a)} for a in allowed]
                proc: Any = TextConstraint(self.vocab_index(), words, heads, width, k, eos)
            else:
                proc = AnswerConstraint(
                    self.trie(forgotten), allowed, self.scaffolds(k), width, k, eos
                )
            kwargs["logits_processor"] = [proc]
            budget += max(len(h) for h in heads)
        else:
            kwargs["stopping_criteria"] = [_StopAtBrace(self.vocab_index(), width)]
            if self.verbalizer.single_token and self.json_items == "candidates":
                tok = self.verbalizer.token_ids
                vocab = max(len(self.tokenizer), int(tok.max()) + 1)
                kwargs["logits_processor"] = [
                    _CandidateItems(tok, [tok[c.candidates] for c in batch], width, vocab)
                ]
            elif self.verbalizer.single_token and forgotten.any():
                banned = self.verbalizer.token_ids[np.flatnonzero(forgotten)]
                kwargs["logits_processor"] = [_Suppress(banned)]
        gen = self.active.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=budget,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos,
            **kwargs,
        )
        out = []
        for k, c in enumerate(batch):
            written = self._decode_after(ids[k], gen[k, width:].tolist())
            if heads[k] and written.startswith(heads[k]):
                written = written[len(heads[k]) :]
            text = ANSWER_OPEN + written
            cands = c.candidates
            if constrained and scope == "catalog":
                chosen = proc.written(k) if textual else proc.states[k].items
                cands = np.array(
                    chosen + [int(i) for i in c.candidates if int(i) not in chosen],
                    dtype=np.int64,
                )
            items, scores, rep = parse_ranking(text, cands, self.verbalizer.lookup, forgotten)
            text = scrub(text, self.verbalizer.lookup, forgotten) if rep.forgotten else text
            out.append(Ranking(c.user, items, scores, mode, rep.fallback, rep, text))
        return out

    def _decode_after(self, prompt: list[int], new: list[int]) -> str:
        """The text the new tokens add after the prompt (decoded in context, so a tokenizer
        that drops a word's leading space when decoding a fragment spells it as written)."""
        special = set(self.tokenizer.all_special_ids)
        new = [t for t in new if t not in special]
        tail = prompt[-8:]
        before = self.tokenizer.decode(tail, skip_special_tokens=False)
        both = self.tokenizer.decode(tail + new, skip_special_tokens=False)
        return both[len(before) :] if both.startswith(before) else self.tokenizer.decode(new)


def _cache_argument(model: Any) -> str:
    """The name under which this transformers version passes and returns the KV cache
    (``cache`` from 5.x, ``past_key_values`` before)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _ranked(ctx: UserContext, scores: np.ndarray, mode: str) -> Ranking:
    order = np.argsort(-scores, kind="stable")
    return Ranking(ctx.user, ctx.candidates[order], scores[order].astype(np.float64), mode)
