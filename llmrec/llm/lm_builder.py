"""``llmrec build-lm``: a small GPT-2-architecture causal LM trained on catalogue text only.

The model exists so the default pipeline and the tests run offline on CPU; it is an ordinary
Hugging Face model folder (``from_pretrained`` loads it). Its corpus is
:func:`llmrec.llm.catalog.catalog_corpus` (titles, years, genres, item-id tokens) plus
:func:`llmrec.llm.pretrain.catalog_sessions` (prompts in the serving format whose "users" are
made up from the catalogue) -- no interaction, rating or profile of a real user ever reaches it,
so it never needs unlearning. The input and output
embeddings are untied so LoRA adapters can learn per-item input and output factors separately.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmrec.data.dataset import Dataset
from llmrec.io import atomic_write_json
from llmrec.llm.catalog import Catalog, ItemVerbalizer, catalog_corpus, item_token
from llmrec.llm.pretrain import catalog_sessions
from llmrec.llm.prompt import PromptBuilder
from llmrec.llm.tokenizer import build_tokenizer
from prompts import list_templates, load_template

MANIFEST = "llmrec_lm.json"


@dataclass
class LMConfig:
    """Size and training schedule of the default model (defaults: ~1.4M parameters, <1 min)."""

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 512
    activation: str = "gelu"
    bpe_vocab: int = 2000
    block_size: int = 256
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 0.01
    sessions: int = 1000
    template: str = "compact"


def _pack(ids: list[list[int]], eos: int, block: int) -> torch.Tensor:
    flat = [t for line in ids for t in (*line, eos)]
    n = max(1, len(flat) // block)
    flat = (flat * (1 + n * block // max(1, len(flat))))[: n * block]
    return torch.tensor(flat, dtype=torch.long).view(n, block)


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
    cfg = config or LMConfig()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    catalog = Catalog.from_dataset(ds)
    corpus = catalog_corpus(catalog, seed=seed)
    # the tokenizer also sees the shipped templates' fixed words (no user data), so prompt
    # scaffolding ("history", "candidates") costs one token each
    words = [load_template(n).static_text() for n in list_templates()]
    tok = build_tokenizer(corpus + words, [item_token(t) for t in catalog.tokens], cfg.bpe_vocab)
    eos = tok.eos_token_id
    builder = PromptBuilder(cfg.template, catalog, ItemVerbalizer(catalog, tok.get_vocab()), tok)
    sessions = catalog_sessions(catalog, builder, cfg.sessions, seed=seed)
    texts = corpus + sessions
    order = np.random.default_rng(seed).permutation(len(texts))
    data = _pack(
        tok([texts[k] for k in order], add_special_tokens=False)["input_ids"], eos, cfg.block_size
    )

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
    model = GPT2LMHeadModel(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * int(np.ceil(len(data) / cfg.batch_size))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * max(0.05, 1.0 - k / steps)
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(data), generator=gen)
        total = 0.0
        for s in range(0, len(data), cfg.batch_size):
            batch = data[perm[s : s + cfg.batch_size]].to(device)
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(data))
        if progress:
            print(f"[build-lm] epoch {epoch + 1}/{cfg.epochs} loss={losses[-1]:.4f}", flush=True)
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
        "weights_sha256": weights_hash(tmp),
    }
    atomic_write_json(tmp / MANIFEST, manifest)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest


def weights_hash(model_dir: str | Path) -> str:
    """sha256 over the model's weight files (how adapters pin the base they were tuned on)."""
    h = hashlib.sha256()
    for p in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def read_manifest(model_dir: str | Path) -> dict | None:
    """The build manifest of a toolkit-built model, ``None`` for any other model."""
    p = Path(model_dir) / MANIFEST
    return json.loads(p.read_text()) if p.is_file() else None
