"""LoRA adapters (peft) tuned on prompt/answer pairs, under ``accelerate``.

The adapter of the toolkit's GPT-2 model puts LoRA on the attention and MLP projections and makes
the item-token rows of the input embedding and of the (untied) output head trainable tokens
(peft ``trainable_token_indices``): they become per-item collaborative factors, stored in the
adapter (only those rows). Any other causal LM gets LoRA on all linear layers.

Loss (teacher forcing on the answer ``{"i1": 10, "i2": 9, ...}``): at the first answer slot the
targets are *all* held-out items of the example (a multinomial likelihood, as in Mult-VAE), at the
other answer positions the usual next-token cross-entropy. Training is seeded and the batch order
fixed, so on CPU the same data and seed give byte-identical adapter weights.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch.nn.parallel import DistributedDataParallel

from llmrec.progress import Progress

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]


@dataclass
class LoraSettings:
    """Adapter shape and optimisation schedule."""

    r: int = 8
    alpha_ratio: float = 2.0
    item_tokens: bool = True
    item_token_layers: str = "both"  # "output": only the head's item rows (no backward below)
    dropout: float = 0.0
    target_modules: list[str] | str | None = None
    epochs: int = 4
    batch_size: int = 16
    lr: float = 5e-3
    item_lr: float = 3e-3
    weight_decay: float = 0.0
    answer_weight: float = 0.5
    prior_weight: float = 0.5
    vocab_weight: float = 0.5
    history_weight: float = 0.0
    list_weight: float = 0.0
    zero_residual: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenizedExample:
    """``ids`` = prompt + answer tokens; the last ``n_answer`` are the answer; ``targets`` are the
    token ids of every held-out item (first-slot targets); ``candidates`` the token ids of the
    candidate list in the generator's order (empty: first slot over the whole vocabulary)."""

    ids: list[int]
    n_answer: int
    targets: list[int]
    candidates: list[int] = field(default_factory=list)
    history: list[int] = field(default_factory=list)  # positions (in ids) of history item tokens


def rank_prior(n: int) -> np.ndarray:
    """The candidate model's order as a log-prior: ``-log2(2 + rank)`` (a DCG discount)."""
    return -np.log2(2.0 + np.arange(n))


def lora_config(
    model: torch.nn.Module, s: LoraSettings, item_token_ids: Sequence[int] | None = None
) -> LoraConfig:
    """LoRA on attention/MLP (GPT-2) or all linear layers (others); with ``item_token_ids`` the
    item rows of the input embedding and output head are trainable tokens."""
    is_gpt2 = getattr(model.config, "model_type", "") == "gpt2"
    targets = s.target_modules or (GPT2_TARGETS if is_gpt2 else "all-linear")
    tokens = None
    if s.item_tokens and item_token_ids is not None and len(item_token_ids):
        ids = sorted(int(i) for i in item_token_ids)
        names = _embedding_names(model)
        if s.item_token_layers == "output" and len(names) > 1:
            names = names[1:]
        tokens = {n: ids for n in names}
    return LoraConfig(
        r=s.r,
        lora_alpha=s.alpha_ratio * s.r,
        lora_dropout=s.dropout,
        target_modules=targets,
        fan_in_fan_out=is_gpt2,
        trainable_token_indices=tokens,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _embedding_names(model: torch.nn.Module) -> list[str]:
    """Module names of the input embedding and (when untied) the output head."""
    named = {id(m): n for n, m in model.named_modules()}
    out = [named[id(model.get_input_embeddings())].split(".")[-1]]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        out.append(named[id(head)].split(".")[-1])
    return out


def center_item_logits(model: torch.nn.Module, item_token_ids: Sequence[int]) -> None:
    """Start the output rows of the items at their mean: every item gets the same logit, so an
    untrained adapter adds nothing to the candidate prior (a zero residual) and all item
    preferences are learned from the shard's data (the base model's catalogue-only item rows
    are arbitrary with respect to users)."""
    head = model.get_output_embeddings()
    names = [n for n, _ in model.named_modules() if n.endswith("lm_head.token_adapter")]
    adapter = getattr(head, "token_adapter", None)
    if adapter is None and names:
        adapter = model.get_submodule(names[0])
    if adapter is None:
        return
    base = adapter.get_base_layer().weight if hasattr(adapter, "get_base_layer") else head.weight
    ids = torch.as_tensor(sorted(int(i) for i in item_token_ids))
    with torch.no_grad():
        rows = base[ids]
        for name, param in adapter.named_parameters():
            if "trainable_tokens_delta" in name:
                param.copy_(rows.mean(0, keepdim=True).expand_as(rows))  # replaces the rows


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block on ``n`` torch intra-op threads (``None``: as set), then restore. A LoRA
    tuning on one thread and on several gives different float bytes, so a re-tune that must
    equal a recorded adapter uses the thread count it was tuned with (``torch_threads`` in
    its manifest)."""
    old = torch.get_num_threads()
    if n is not None and int(n) > 0 and int(n) != old:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded tensors; position ids restart at 0 after the padding of each row."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for k, e in enumerate(batch):
        ids[k, width - len(e.ids) :] = torch.tensor(e.ids, dtype=torch.long)
        mask[k, width - len(e.ids) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


def list_slots(e: TokenizedExample) -> list[tuple[int, list[int], int]]:
    """The answer's item slots after the first whose token is a candidate: ``(offset in the
    answer, candidates not written before it, index of the written one among them)``."""
    if not e.candidates or e.n_answer < 2:
        return []
    cands = set(e.candidates)
    answer = e.ids[-e.n_answer :]
    written: set[int] = {answer[0]} if answer[0] in cands else set()
    out = []
    for j in range(1, len(answer)):
        t = answer[j]
        if t in cands and t not in written:
            left = [c for c in e.candidates if c not in written]
            out.append((j, left, left.index(t)))
            written.add(t)
    return out


@dataclass(frozen=True)
class LossTotals:
    """Normalisers of :func:`answer_loss`: examples, answer tokens after the first slot, history
    targets, candidate slots after the first. Computed on the global batch, they make
    per-process slices sum to the full loss."""

    examples: int
    answer_tokens: int
    history_tokens: int
    list_slots: int = 0

    @classmethod
    def of(
        cls,
        batch: Sequence[TokenizedExample],
        history_weight: float = 0.0,
        list_weight: float = 0.0,
    ) -> LossTotals:
        hist = sum(max(0, len(e.history) - 1) for e in batch) if history_weight > 0 else 0
        lst = sum(len(list_slots(e)) for e in batch) if list_weight > 0 else 0
        return cls(len(batch), sum(max(0, e.n_answer - 1) for e in batch), hist, lst)


def answer_loss(
    model: torch.nn.Module,
    batch: Sequence[TokenizedExample],
    pad_id: int,
    answer_weight: float,
    prior_weight: float = 0.0,
    vocab_weight: float = 0.0,
    history_weight: float = 0.0,
    totals: LossTotals | None = None,
    list_weight: float = 0.0,
) -> torch.Tensor:
    """First-slot multinomial loss over all held-out items + CE on the rest of the answer.

    With candidates the first slot is a softmax over the candidate list only, of the model's
    logits *plus* ``prior_weight`` times :func:`rank_prior`: the adapter learns a residual on top
    of the candidate model's order (the score served as the blended ranking), plus
    ``vocab_weight`` times the same multinomial over the whole vocabulary (every item row learns).

    ``history_weight``: next-token CE on every history item token after the first (the history is
    in random order, so each position predicts a held-out member of the user's set from the rest
    before it): dozens of self-supervised targets per prompt for the cost of one forward pass.

    ``totals``: the normalisers (examples, answer tokens, history tokens) of the *global* batch
    when ``batch`` is one process's slice of it (data parallelism); default: ``batch``'s own.

    ``list_weight``: at every later answer slot that writes a candidate, the cross-entropy of
    a softmax over the candidates not yet written (a Plackett-Luce likelihood of the answer's
    ranking of the candidate list, :func:`list_slots`): what likelihood serving and a valid
    JSON answer both need, the model choosing among the prompt's candidates.
    """
    totals = totals or LossTotals.of(batch, history_weight, list_weight)
    inputs = collate(batch, pad_id)
    dev = next(model.parameters()).device
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    keep = max(e.n_answer for e in batch) + 1
    want_hist = history_weight > 0 and any(len(e.history) > 1 for e in batch)
    out = model(**inputs, logits_to_keep=keep, output_hidden_states=want_hist)
    logits = out.logits  # [B, keep, V]
    hist_loss = None
    if want_hist:
        width = inputs["input_ids"].shape[1]
        rows, cols, tgts = [], [], []
        for b, e in enumerate(batch):
            shift = width - len(e.ids)
            for p in e.history[1:]:
                rows.append(b)
                cols.append(shift + p - 1)
                tgts.append(e.ids[p])
        h = out.hidden_states[-1][torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
        core = model.module if isinstance(model, DistributedDataParallel) else model
        hl = core.get_output_embeddings()(h)
        hist_loss = F.cross_entropy(hl.float(), torch.tensor(tgts, device=dev), reduction="sum")
    # Every term gathers its logit rows with one indexing op per term: indexing the [B, keep, V]
    # logits per example makes autograd materialise a full-size zero gradient per index (most
    # of a tuning step's time before).
    n = len(batch)
    j0 = torch.tensor([keep - e.n_answer - 1 for e in batch], device=dev)  # first answer slot
    rows0 = logits[torch.arange(n, device=dev), j0].float()  # [B, V]
    targets, t_w = _padded([e.targets for e in batch], dev)
    t_loss = -(rows0.log_softmax(-1).gather(1, targets) * t_w).sum(1)  # mean over the targets
    first = t_loss
    with_c = [bool(e.candidates) for e in batch]
    if any(with_c):
        cands, c_mask = _padded([e.candidates for e in batch], dev, weights=False)
        prior = torch.zeros(cands.shape, device=dev)
        hit = torch.zeros(cands.shape, device=dev)
        for b, e in enumerate(batch):
            prior[b, : len(e.candidates)] = torch.as_tensor(rank_prior(len(e.candidates)))
            pos = [e.candidates.index(t) for t in e.targets if t in e.candidates]
            if pos:
                hit[b, pos] = 1.0 / len(pos)
        z = (rows0.gather(1, cands) + prior_weight * prior).masked_fill(c_mask == 0, -1e9)
        c_loss = -(z.log_softmax(-1).masked_fill(c_mask == 0, 0.0) * hit).sum(1)
        if vocab_weight:
            c_loss = c_loss + vocab_weight * t_loss
        first = torch.where(torch.tensor(with_c, device=dev), c_loss, t_loss)
    rest = torch.zeros((), device=dev)
    if totals.answer_tokens:
        rb, rr, rt = [], [], []
        for b, e in enumerate(batch):
            for t in range(1, e.n_answer):
                rb.append(b)
                rr.append(keep - e.n_answer - 1 + t)
                rt.append(e.ids[len(e.ids) - e.n_answer + t])
        if rb:
            picked = logits[torch.tensor(rb, device=dev), torch.tensor(rr, device=dev)].float()
            rest = F.cross_entropy(picked, torch.tensor(rt, device=dev), reduction="sum")
    listed = torch.zeros((), device=dev)
    if list_weight and totals.list_slots:
        lb, lr, lefts, ks = [], [], [], []
        for b, e in enumerate(batch):
            for j, left, k in list_slots(e):
                lb.append(b)
                lr.append(keep - e.n_answer - 1 + j)
                lefts.append(left)
                ks.append(k)
        if lb:
            left_ids, l_mask = _padded(lefts, dev, weights=False)
            picked = logits[torch.tensor(lb, device=dev), torch.tensor(lr, device=dev)].float()
            z = picked.gather(1, left_ids).masked_fill(l_mask == 0, -1e9).log_softmax(-1)
            listed = -z.gather(1, torch.tensor(ks, device=dev)[:, None]).sum()
    loss = first.sum() / totals.examples
    if totals.answer_tokens:
        loss = loss + answer_weight * rest / totals.answer_tokens
    if list_weight and totals.list_slots:
        loss = loss + list_weight * listed / totals.list_slots
    if hist_loss is not None and totals.history_tokens:
        loss = loss + history_weight * hist_loss / totals.history_tokens
    return loss


def _padded(
    lists: Sequence[Sequence[int]], dev: torch.device, weights: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[len(lists), longest]`` ids (pad: id 0) and per-entry weights: ``1/len``
    (a mean over each list) with ``weights``, else a 0/1 mask."""
    width = max(1, max((len(x) for x in lists), default=0))
    ids = torch.zeros((len(lists), width), dtype=torch.long)
    w = torch.zeros((len(lists), width))
    for k, x in enumerate(lists):
        ids[k, : len(x)] = torch.as_tensor(list(x), dtype=torch.long)
        w[k, : len(x)] = 1.0 / len(x) if weights else 1.0
    return ids.to(dev), w.to(dev)


def tune_adapter(
    base: str | Path,
    epochs: Callable[[int], list[TokenizedExample]],
    settings: LoraSettings,
    out_dir: str | Path,
    seed: int,
    pad_id: int,
    item_token_ids: Sequence[int] | None = None,
    accelerator: Any = None,
    progress: Callable[[str], None] | None = None,
    data_parallel: bool = False,
    load: Any = None,
    base_name: str | None = None,
) -> dict[str, Any]:
    """Tune one adapter on ``epochs(e)`` (the examples of epoch ``e``) and save it (peft format).

    ``accelerator``: an ``accelerate.Accelerator`` (a CPU one is made if absent). By default the
    adapter is tuned by this process alone (processes tune different shards). With
    ``data_parallel`` every process of the accelerator tunes this adapter together: the model is
    wrapped in DDP, each process takes every ``world_size``-th example of each (identically
    ordered) batch, and the loss is normalised by the global batch, so the averaged gradient is
    the single-process one up to float summation order. Only the main process writes
    ``out_dir``. Returns per-epoch losses and timing.

    ``load`` (:class:`llmrec.llm.loading.LoadOptions`): dtype, device map, attention
    implementation, remote code of the base. The LoRA weights stay float32 whatever the base
    dtype; on a GPU the forward passes run under bfloat16 autocast. ``base_name``: how the saved
    adapter (``adapter_config.json``, model card) names its base (default: ``base``), e.g. a
    workspace-relative path that holds wherever the workspace is copied.
    """
    from accelerate import Accelerator

    from llmrec.llm.loading import LoadOptions, load_causal_lm

    acc = accelerator or Accelerator(cpu=True)
    world = acc.num_processes if data_parallel else 1
    seed_everything(seed)
    opts = load or LoadOptions()
    if opts.dtype == "auto":  # fp32 master weights; speed comes from autocast below
        import dataclasses

        opts = dataclasses.replace(opts, dtype="float32")
    model = load_causal_lm(str(base), opts, device=str(acc.device))
    model = get_peft_model(model, lora_config(model, settings, item_token_ids))
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if settings.zero_residual and item_token_ids is not None and len(item_token_ids):
        center_item_logits(model, item_token_ids)
    if opts.device_map is None:
        model.to(acc.device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if acc.device.type == "cuda"
        else contextlib.nullcontext()
    )
    if world > 1:
        model = acc.prepare_model(model)  # DDP: gradients averaged over the processes
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if "trainable_tokens" not in n], "lr": settings.lr},
        {"params": [p for n, p in named if "trainable_tokens" in n], "lr": settings.item_lr},
    ]
    opt = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=settings.lr, weight_decay=settings.weight_decay
    )
    model.train()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    losses = []
    n_seen = 0
    bar = Progress(
        range(settings.epochs),
        desc="LoRA tuning",
        unit="epoch",
        disable=progress is None or not acc.is_main_process,
    )
    for epoch in bar:
        data = epochs(epoch)
        order = torch.randperm(len(data), generator=gen).tolist()
        total, n = torch.zeros((), device=acc.device), 0
        for s in range(0, len(order), settings.batch_size):
            batch = [data[k] for k in order[s : s + settings.batch_size]]
            totals = LossTotals.of(batch, settings.history_weight, settings.list_weight)
            mine = batch[acc.process_index :: world] if world > 1 else batch
            with autocast:
                loss = answer_loss(
                    model,
                    mine or batch[:1],  # an idle process still takes part in the all-reduce
                    pad_id,
                    settings.answer_weight,
                    settings.prior_weight,
                    settings.vocab_weight,
                    settings.history_weight,
                    totals,
                    settings.list_weight,
                ) * (world if mine else 0.0)  # DDP averages: world x (slice sum / global count)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            total += loss.detach() / world * len(batch)  # this process's share
            n += len(batch)
        if world > 1:  # one all-reduce per epoch for the logged loss, not one per step
            total = acc.reduce(total, reduction="sum")
        n_seen += n
        losses.append(float(total) / max(1, n))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if progress:
            progress(f"epoch {epoch + 1}/{settings.epochs} loss={losses[-1]:.4f}")
    bar.close()
    model = acc.unwrap_model(model) if world > 1 else model
    model.eval()
    if base_name is not None:
        for c in model.peft_config.values():
            c.base_model_name_or_path = base_name
        inner = model.get_base_model()  # what the model card names
        inner.name_or_path = inner.config.name_or_path = base_name
    if acc.is_main_process or world == 1:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out), save_embedding_layers=False)
    return {
        "losses": losses,
        "examples": n_seen,
        "seconds": time.perf_counter() - t0,
        "processes": world,
        "torch_threads": torch.get_num_threads(),  # the float bytes depend on it
    }


def load_adapters(model: torch.nn.Module, adapters: dict[str, str | Path]) -> PeftModel:
    """Attach several saved adapters to one base model (names are the dict keys)."""
    names = list(adapters)
    peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.eval()
    return peft_model
