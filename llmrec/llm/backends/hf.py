"""The Hugging Face + peft serving backend: any ``AutoModelForCausalLM``, optionally with LoRA
adapters (merged copies per adapter, or switched on one peft model), as a
:class:`~llmrec.llm.backends.base.RankBackend`.

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
  dropped; fallback to the candidate order counted). With single-token item ids the item tokens
  the model may write are the candidates it has not written yet (``json_items="candidates"``,
  the default; ``"free"``: every non-forgotten item); the JSON text is the model's own.
* ``constrained`` -- greedy decoding restricted to valid answers over the candidates (or the
  catalogue) minus forgotten items (:mod:`llmrec.llm.constrained`, applied here as a logits
  processor), with the JSON scaffold forced, so the answer always parses to exact ids.

Whatever the mode and whatever the model prefers, a forgotten item is never returned: it is
removed from the candidates, from the trie and from the parsed answer.

CPU serving options (off by default; ``scripts/bench.py llm --levers`` measures each against the
default, with the agreement of the rankings):

* ``quantize="int8"`` -- dynamic int8 quantisation of every ``Linear`` layer (weights int8,
  activations quantised per batch; CPU only, merged adapters only);
* ``memo=True`` -- answers kept in the process-wide :mod:`~llmrec.llm.backends.memo`, keyed by
  the prompt, candidates, answer settings, base weights and adapter bytes;
* ``prefix_cache=True`` -- the likelihood and verbalizer modes run the instruction prefix every
  prompt of a batch shares once per adapter and reuse its KV cache.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria

from llmrec.llm.backends.base import (
    BackendSpec,
    Ranking,
    check_mode,
    encode_prompt,
    forgotten_mask,
    index_labels,
    ranked,
    without_forgotten,
)
from llmrec.llm.backends.memo import SHARED_MEMO, RankMemo, digest, folder_digest, module_digest
from llmrec.llm.catalog import Catalog, ItemVerbalizer
from llmrec.llm.constrained import AnswerConstraint, AnswerSpelling, TextConstraint, VocabIndex
from llmrec.llm.loading import (
    LoadOptions,
    ensure_pad,
    load_causal_lm,
    load_tokenizer,
    resolve_base,
    weights_hash,
)
from llmrec.llm.lora import TokenizedExample, collate
from llmrec.llm.parsing import parse_ranking, scrub
from llmrec.llm.prompt import EncodedPrompt, PromptBuilder, UserContext, context_limit
from prompts import ANSWER_OPEN, PromptTemplate, default_template

#: the shortest shared prefix worth a KV cache of its own (``prefix_cache``)
MIN_PREFIX = 8


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


class _Constrained(LogitsProcessor):
    """Applies a constraint automaton (:mod:`llmrec.llm.constrained`) to greedy decoding: per
    row, every token but those the automaton allows after the row's written tokens is banned."""

    def __init__(self, constraint: AnswerConstraint | TextConstraint, prompt_width: int):
        self.constraint = constraint
        self.width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, -torch.inf)
        for row, toks in enumerate(input_ids[:, self.width :].tolist()):
            mask[row, self.constraint.allowed_after(row, toks)] = 0.0
        return scores + mask


class HFBackend:
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
        quantize: str | None = None,
        memo: bool | RankMemo = False,
        prefix_cache: bool = False,
        identity: dict[str, Any] | None = None,
    ):
        """``identity`` (for the memo): ``{"base": hash, "adapters": {name: hash}}`` of the
        files the model was loaded from (default: hashes of the loaded weights)."""
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
        self.spelling = AnswerSpelling(self.builder, self.verbalizer, self.tokenizer)
        self.batch_size = batch_size
        self.top_k = top_k
        self.max_prompt_tokens = limit
        self.kv_cache = kv_cache
        if json_items not in ("candidates", "free"):
            raise ValueError(f"json_items must be 'candidates' or 'free', got {json_items!r}")
        self.json_items = json_items
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        self.quantize = quantize
        if quantize:
            self._quantize_int8()
        self.memo: RankMemo | None = (
            SHARED_MEMO if memo is True else memo if isinstance(memo, RankMemo) else None
        )
        self.identity = identity
        self.prefix_cache = prefix_cache
        self._prefix_kv: dict[tuple, Any] = {}
        self._instruction: list[int] | None = None
        self._adapter: str | None = None
        self._encoded: dict[tuple[int, bool], EncodedPrompt] = {}
        self.stats: dict[str, float] = {
            "users": 0,
            "seconds": 0.0,
            "fallbacks": 0,
            "memo_hits": 0,
            "prompt_tokens": 0,
        }
        self._modes = {
            "likelihood": self._likelihood,
            "verbalizer": self._verbalizer,
            "json": self._json,
            "constrained": self._constrained,
        }

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, spec: BackendSpec) -> HFBackend:
        """The backend of a :class:`BackendSpec` (what serving builds); ``spec.options`` go to
        :meth:`from_pretrained`."""
        load = spec.load or LoadOptions()
        return cls.from_pretrained(
            spec.model,
            spec.catalog,
            adapters=spec.adapters,
            device=spec.device,
            template=spec.template,
            batch_size=spec.batch_size,
            top_k=spec.top_k,
            dtype=None if load.dtype == "auto" else load.dtype,
            device_map=load.device_map,
            attn_implementation=load.attn_implementation,
            trust_remote_code=load.trust_remote_code,
            revision=load.revision,
            **spec.options,
        )

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
    ) -> HFBackend:
        """Load a local folder or a cached hub id (and named peft adapters), from local files.

        ``dtype``: a ``torch.dtype`` or ``auto|float32|bfloat16|float16`` (default: bfloat16 on
        CUDA, float32 on CPU); ``device_map`` (e.g. ``"auto"``), ``attn_implementation`` and
        ``trust_remote_code`` go to ``from_pretrained``. ``merge``: serve one merged copy of
        the model per adapter (no adapter arithmetic per step: several times faster for small
        models); default: merge when the base model has fewer than 100M parameters and no
        device map is used (or ``quantize`` is asked for), otherwise switch adapters on one peft
        model.
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
        model = load_causal_lm(base, opts, device=None if dev is None else str(dev))
        memo = kwargs.get("memo")
        if (memo is True or isinstance(memo, RankMemo)) and "identity" not in kwargs:
            kwargs["identity"] = {  # what the memo keys answers on
                "base": weights_hash(base, revision),
                "load": opts.to_dict(),
                "adapters": {n: folder_digest(p) for n, p in (adapters or {}).items()},
                "merge": merge,
            }
        if not adapters:
            return cls(model, tok, catalog, device=dev, **kwargs)
        from peft import PeftModel

        if merge is None:  # int8 serves merged copies (quantised Linear layers take no LoRA)
            small = sum(p.numel() for p in model.parameters()) < 100_000_000
            merge = (small or kwargs.get("quantize") is not None) and device_map is None
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
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"adapter {adapter!r} requested but the model has {self.adapters}")
        self._adapter = adapter
        if self.merged or not self.adapters:
            self.active = self.model if adapter is None else self.merged[adapter]
            return contextlib.nullcontext()
        self.active = self.model
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ RankBackend
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
        check_mode(mode, scope)
        forgotten = forgotten_mask(forgotten, len(self.catalog))
        clean = without_forgotten(contexts, forgotten)
        run = self._modes[mode]
        # nothing to rank (every candidate forgotten): an empty ranking, the model not asked
        # (a catalogue-scope answer may still name other items)
        asked = [k for k, c in enumerate(clean) if len(c.candidates) or scope == "catalog"]
        out = [ranked(c, np.zeros(0), mode) for c in clean]
        t0 = time.perf_counter()
        keys: dict[int, str] = {}
        with torch.no_grad(), self._adapter_ctx(adapter):
            if self.memo is not None:
                keys = {k: self._memo_key(clean[k], mode, scope, forgotten) for k in asked}
                hits = {k: self.memo.get(keys[k]) for k in asked}
                for k, hit in hits.items():
                    if hit is not None:
                        out[k] = hit
                self.stats["memo_hits"] += sum(h is not None for h in hits.values())
                asked = [k for k in asked if hits[k] is None]
            todo = [clean[k] for k in asked]
            got: list[Ranking] = []
            try:
                for s in range(0, len(todo), self.batch_size):
                    got += run(todo[s : s + self.batch_size], forgotten, scope)
                read = {id(c) for c in todo}
                self.stats["prompt_tokens"] += sum(
                    len(e.ids) for (i, _), e in self._encoded.items() if i in read
                )
            finally:
                self._encoded.clear()
        for k, r in zip(asked, got):
            out[k] = r
            if self.memo is not None:
                self.memo.put(keys[k], r)
        for r in out:  # defence in depth: nothing forgotten leaves this method
            keep = ~forgotten[r.items] if len(r.items) else np.zeros(0, bool)
            r.items, r.scores = r.items[keep], r.scores[keep]
        self.stats["users"] += len(out)
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["fallbacks"] += sum(r.fallback for r in out)
        return out

    def _encode(self, ctx: UserContext, labels: Sequence[str] | None = None) -> EncodedPrompt:
        """``builder.encode`` once per context and rank call (the memo key needs it too)."""
        key = (id(ctx), labels is not None)
        enc = self._encoded.get(key)
        if enc is None:
            enc = self.builder.encode(ctx, labels=labels)
            self._encoded[key] = enc
        return enc

    # ------------------------------------------------------------------ CPU serving options
    def _quantize_int8(self) -> None:
        """Dynamic int8 quantisation of every ``Linear`` layer (weights int8, activations per
        batch) of the base model and the merged copies."""
        import warnings

        from torch.ao.quantization import quantize_dynamic

        if self.device.type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on CPU only (use --device cpu)")
        if getattr(self.model, "peft_config", None):
            raise ValueError("int8 quantisation serves merged adapters only (merge=True)")

        def q(m: Any) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao -> torchao
                warnings.simplefilter("ignore", UserWarning)  # quantised tensor creation
                return quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8).eval()

        self.model = q(self.model)
        self.merged = {k: q(m) for k, m in self.merged.items()}
        self.active = self.model

    def _weights_id(self, adapter: str | None) -> str:
        """What the answers of ``adapter`` (``None``: the base) are computed with."""
        ident = self.identity
        if ident is None:  # built from a model object: hash what is loaded
            ident = self.identity = {"weights": {}}
        if "weights" in ident:
            if adapter not in ident["weights"]:
                model = self.model if adapter is None or not self.merged else self.merged[adapter]
                ident["weights"][adapter] = module_digest(model)
            return digest(ident["weights"][adapter], adapter, self.quantize)
        adapters = ident.get("adapters", {})
        return digest(ident["base"], ident.get("load"), ident.get("merge"), adapter,
                      adapters.get(adapter), self.quantize, str(self.device))  # fmt: skip

    def _memo_key(self, ctx: UserContext, mode: str, scope: str, forgotten: np.ndarray) -> str:
        """Everything the answer for ``ctx`` depends on (see :mod:`~llmrec.llm.backends.memo`):
        the prompt's token ids in this mode, the candidates, the answer settings, the weights;
        the forgotten set where the model may name items outside the candidates; the whole
        history where the answer may not name it (catalogue scope)."""
        labels = index_labels(len(ctx.candidates)) if mode == "verbalizer" else None
        enc = self._encode(ctx, labels)
        free = (mode == "constrained" and scope == "catalog") or (
            mode == "json"
            and not (self.verbalizer.single_token and self.json_items == "candidates")
        )
        return digest(
            self._weights_id(self._adapter),
            mode,
            scope,
            self.top_k,
            self.json_items,
            self.kv_cache,
            self.prefix_cache,
            self.builder.template.name,
            np.asarray(enc.ids, dtype=np.int64),
            np.asarray(ctx.candidates, dtype=np.int64),
            np.flatnonzero(forgotten) if free else None,
            np.asarray(ctx.history_items, dtype=np.int64) if scope == "catalog" else None,
        )

    def instruction_prefix(self) -> list[int]:
        """The token ids every prompt of this builder starts with (system text, chat markup and
        whatever the template writes before the first user-specific word): the common prefix
        of two prompts that share no attribute, history or candidate."""
        if self._instruction is None:
            n = len(self.catalog)
            one = np.array([0]), np.array([max(n - 1, 0)])
            a = UserContext(-1, {"gender": "F", "age": "1"}, one[0], np.array([5.0]), one[1])
            b = UserContext(-2, {"gender": "M", "age": "56"}, one[1], np.array([1.0]), one[0])
            ia, ib = self.builder.encode(a).ids, self.builder.encode(b).ids
            k = 0
            while k < min(len(ia), len(ib)) and ia[k] == ib[k]:
                k += 1
            self._instruction = ia[:k]
        return self._instruction

    def _shared_prefix(self, ids: Sequence[list[int]]) -> int:
        """How many leading tokens of every row the cached instruction prefix covers (0: the
        prefix cache is off, too short to pay, or a row does not start with it)."""
        if not self.prefix_cache:
            return 0
        head = self.instruction_prefix()
        n = len(head)
        if n < MIN_PREFIX or any(len(i) <= n or i[:n] != head for i in ids):
            return 0
        return n

    def _prefix_state(self, prefix: tuple[int, ...]) -> Any:
        """The KV cache of ``prefix`` under the active adapter (computed once)."""
        key = (self._adapter, prefix)
        if key not in self._prefix_kv:
            ids = torch.tensor([list(prefix)], device=self.device)
            out = self.active(input_ids=ids, use_cache=True, logits_to_keep=1)
            self._prefix_kv[key] = out[_cache_argument(self.active)]
        return self._prefix_kv[key]

    def prompt(self, ctx: UserContext, mode: str = "likelihood") -> EncodedPrompt:
        """The prompt served for ``ctx`` in ``mode`` (text and token ids)."""
        return encode_prompt(self.builder, ctx, mode)

    # ------------------------------------------------------------------ likelihood
    def _forward_last(self, ids: list[list[int]]) -> torch.Tensor:
        """Next-token log-probabilities after each prompt (one forward pass for the batch; with
        ``prefix_cache`` the shared prefix comes from its KV cache)."""
        n = self._shared_prefix(ids)
        if n:
            return self._forward_last_after_prefix(ids, n)
        inputs = collate([TokenizedExample(i, 0, []) for i in ids], self.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        logits = self.active(**inputs, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def _forward_last_after_prefix(self, ids: list[list[int]], n: int) -> torch.Tensor:
        cache = copy.deepcopy(self._prefix_state(tuple(ids[0][:n])))
        cache.batch_repeat_interleave(len(ids))
        rest = collate([TokenizedExample(i[n:], 0, []) for i in ids], self.tokenizer.pad_token_id)
        mask = torch.cat([torch.ones(len(ids), n, dtype=torch.long), rest["attention_mask"]], 1)
        logits = self.active(
            input_ids=rest["input_ids"].to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=(rest["position_ids"] + n).to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **{_cache_argument(self.active): cache},
        ).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def _likelihood(
        self, batch: Sequence[UserContext], forgotten: np.ndarray, scope: str
    ) -> list[Ranking]:
        encs = [self._encode(c) for c in batch]
        if self.verbalizer.single_token:
            logp = self._forward_last([e.ids for e in encs]).cpu().numpy()
            scores = [logp[k, self.verbalizer.token_ids[c.candidates]] for k, c in enumerate(batch)]
        else:
            scores = [
                self.continuation_scores(e, [self.verbalizer(int(i)) + '"' for i in c.candidates])
                for e, c in zip(encs, batch)
            ]
        return [ranked(c, sc, "likelihood") for c, sc in zip(batch, scores)]

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
        cache_arg = _cache_argument(self.active)
        shared = self._shared_prefix([prefix])
        if shared:  # the instruction prefix from its cache, the rest of the prompt on top
            kv = copy.deepcopy(self._prefix_state(tuple(prefix[:shared])))
            out = self.active(
                input_ids=torch.tensor([prefix[shared:]], device=self.device),
                position_ids=torch.arange(shared, len(prefix), device=self.device)[None],
                use_cache=True,
                logits_to_keep=1,
                **{cache_arg: kv},
            )
        else:
            ids = torch.tensor([prefix], device=self.device)
            out = self.active(input_ids=ids, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
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
    def _verbalizer(
        self, batch: Sequence[UserContext], forgotten: np.ndarray, scope: str
    ) -> list[Ranking]:
        return [self._verbalized(c) for c in batch]

    def _verbalized(self, ctx: UserContext) -> Ranking:
        labels = index_labels(len(ctx.candidates))
        enc = self._encode(ctx, labels)
        cut, tails = self.builder.continuations(enc, [lab + '"' for lab in labels])
        firsts = [t[0] for t in tails if t]
        if cut == len(enc.ids) and len(firsts) == len(tails) and len(set(firsts)) == len(tails):
            logp = self._forward_last([enc.ids])[0].cpu().numpy()
            scores = logp[np.asarray(firsts, dtype=np.int64)].astype(np.float64)
        else:  # a label is not one distinct token here: score the labels' spellings
            scores = self.continuation_scores(enc, [lab + '"' for lab in labels])
        return ranked(ctx, scores, "verbalizer")

    # ------------------------------------------------------------------ written answers
    def _json(self, batch: Sequence[UserContext], forgotten: np.ndarray, scope: str):
        return self._generate(batch, forgotten, constrained=False)

    def _constrained(self, batch: Sequence[UserContext], forgotten: np.ndarray, scope: str):
        return self._generate(batch, forgotten, constrained=True, scope=scope)

    def _generate(
        self,
        batch: Sequence[UserContext],
        forgotten: np.ndarray,
        constrained: bool,
        scope: str = "candidates",
    ) -> list[Ranking]:
        budget = self.builder.answer_reserve()
        encs = [self._encode(c) for c in batch]
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
                con: Any = TextConstraint(self.spelling.vocab_index(), words, heads, k, eos)
            else:
                con = AnswerConstraint(
                    self.spelling.trie(forgotten), allowed, self.spelling.scaffolds(k), k, eos
                )
            kwargs["logits_processor"] = [_Constrained(con, width)]
            budget += max(len(h) for h in heads)
        else:
            kwargs["stopping_criteria"] = [_StopAtBrace(self.spelling.vocab_index(), width)]
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
                chosen = con.written(k)
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
