"""The toolkit's own tokenizer: byte-level BPE on catalogue text plus one token per item.

Byte-level BPE can encode any string (profiles, numbers, unseen words) without an unknown token;
the item tokens ``<i{id}>`` are added tokens that absorb the space before them, so
``"history <i1> 5 <i2> 4"`` costs one token per item and one per rating.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def build_tokenizer(
    corpus: Iterable[str], item_tokens: Sequence[str], vocab_size: int = 2000
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``corpus`` (item tokens removed first) and add ``item_tokens``.

    ``<|endoftext|>`` is the BOS/EOS/padding token, as in GPT-2.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    items = set(item_tokens)
    texts = [" ".join(w for w in line.split() if w not in items) for line in corpus]
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(
        [AddedToken(t, lstrip=True, rstrip=False, normalized=False) for t in item_tokens]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None
    )
    fast.model_max_length = 1 << 30
    return fast
