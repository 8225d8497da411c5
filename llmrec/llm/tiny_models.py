"""Tiny random-initialised checkpoints of real Hugging Face LLM families (tests, benchmarks).

Each family gets its own architecture class (Llama, Qwen2, Mistral, GPT-NeoX, Phi-3, Gemma,
OPT, GPT-2) at a toy size and a tokenizer trained locally on catalogue text with the
``tokenizers`` library, in the style the real family ships: SentencePiece-like (metaspace BPE or
Unigram, BOS added) or byte-level BPE, with or without a pad token and a chat template. Nothing
is downloaded. The folders are ordinary ``save_pretrained`` output (OPT's as ``.bin``), loaded
by ``AutoModelForCausalLM``/``AutoTokenizer`` like any hub model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INST = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% else %}[INST] {{ m.content }} [/INST]{% endif %}{% endfor %}"
)
PHI3 = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ m.content }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """How one family's tiny checkpoint and tokenizer are made."""

    name: str
    tokenizer: str  # "sp-bpe" | "sp-unigram" | "byte-bpe"
    bos: bool
    pad: bool
    chat: str | None = None
    markers: tuple[str, ...] = ()
    bin_weights: bool = False


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", "sp-bpe", bos=True, pad=False),
        Family("qwen2", "byte-bpe", bos=False, pad=True, chat=CHATML,
               markers=("<|im_start|>", "<|im_end|>")),
        Family("mistral", "sp-unigram", bos=True, pad=False, chat=INST),
        Family("gpt_neox", "byte-bpe", bos=False, pad=True),
        Family("phi3", "sp-bpe", bos=True, pad=True, chat=PHI3,
               markers=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")),
        Family("gemma", "sp-unigram", bos=True, pad=True, chat=GEMMA,
               markers=("<start_of_turn>", "<end_of_turn>")),
        Family("opt", "byte-bpe", bos=True, pad=True, bin_weights=True),
        Family("gpt2", "byte-bpe", bos=False, pad=False),
    )
}  # fmt: skip


def train_tokenizer(family: Family, corpus: Sequence[str], vocab_size: int = 400) -> Any:
    """A ``PreTrainedTokenizerFast`` of the family's style trained on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if family.pad else []) + list(family.markers)
    if family.tokenizer == "byte-bpe":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif family.tokenizer == "sp-bpe":
        tk = Tokenizer(models.BPE(unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials)
    else:
        tk = Tokenizer(models.Unigram())
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>"
        )
    tk.train_from_iterator(list(corpus), trainer)
    post = []
    if family.tokenizer == "byte-bpe":
        post.append(processors.ByteLevel(trim_offsets=False))
    if family.bos:
        bos = "</s>" if family.name == "opt" else "<s>"  # OPT starts every input with </s>
        post.append(
            processors.TemplateProcessing(
                single=f"{bos} $A",
                pair=f"{bos} $A {bos} $B",
                special_tokens=[(bos, tk.token_to_id(bos))],
            )
        )
    if post:
        tk.post_processor = post[0] if len(post) == 1 else processors.Sequence(post)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token="</s>" if family.name == "opt" else "<s>",
        eos_token="</s>",
        pad_token="<pad>" if family.pad else None,
        additional_special_tokens=list(family.markers) or None,
    )
    tok.model_max_length = 1 << 30  # the model config holds the true limit
    if family.chat:
        tok.chat_template = family.chat
    return tok


def model_config(family: Family, tok: Any, positions: int, hidden: int = 32) -> Any:
    """A toy config of the family's architecture (2 layers, ``hidden`` wide)."""
    from transformers import (
        GemmaConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        Phi3Config,
        Qwen2Config,
    )

    ids = {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    common = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": positions,
        **ids,
    }
    n = family.name
    if n == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if n == "qwen2":
        return Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, **common)
    if n == "mistral":
        return MistralConfig(num_key_value_heads=2, sliding_window=None, **common)
    if n == "gpt_neox":
        return GPTNeoXConfig(**common)
    if n == "phi3":
        return Phi3Config(
            num_key_value_heads=4, original_max_position_embeddings=positions, **common
        )
    if n == "gemma":
        return GemmaConfig(num_key_value_heads=1, head_dim=hidden // 4, **common)
    if n == "opt":
        return OPTConfig(
            hidden_size=hidden,
            ffn_dim=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=positions,
            word_embed_proj_dim=hidden,
            **ids,
        )
    if n == "gpt2":
        return GPT2Config(n_embd=hidden, n_layer=2, n_head=4, n_positions=positions, **ids)
    raise ValueError(f"unknown family {n!r}; known: {', '.join(FAMILIES)}")


def build_tiny(
    family: str | Family,
    out: str | Path,
    corpus: Sequence[str],
    positions: int = 1024,
    hidden: int = 32,
    vocab_size: int = 400,
    seed: int = 0,
) -> Path:
    """Write a random tiny checkpoint of ``family`` (model + tokenizer) to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    fam = FAMILIES[family] if isinstance(family, str) else family
    tok = train_tokenizer(fam, corpus, vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(fam, tok, positions, hidden))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=not fam.bin_weights)
    tok.save_pretrained(str(out))
    return out


def catalog_corpus_text(catalog: Any, extra: Sequence[str] = ()) -> list[str]:
    """Tokenizer training text: item ids, titles, years, genres and the templates' words."""
    from prompts import load_template, vocabulary_templates

    lines = [f"- {catalog.tokens[i]}: {catalog.text(i)}" for i in range(len(catalog))]
    lines += [load_template(n).static_text() for n in vocabulary_templates()]
    lines += ['{"' + t + '": 10, "' for t in catalog.tokens] + list(extra)
    return lines
