"""The candidate-list answer (``answer_fill``) and its listwise loss (``list_weight``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmrec.llm.lora import LossTotals, TokenizedExample, answer_loss, list_slots
from llmrec.llm.shards import Example

SEP = 3  # a scaffold token that is no candidate


def _example(prompt: list[int], answer: list[int], targets: list[int], cands: list[int]):
    return TokenizedExample(prompt + answer, len(answer), targets, cands)


def test_filled_answer_ranks_only_candidates_targets_first():
    e = Example(1, {}, np.array([5]), None, np.array([9, 4, 7, 2, 8]), np.array([7, 30, 8, 31]))
    assert e.answer_items(4, fill=True).tolist() == [7, 8, 9, 4]
    assert e.answer_items(10, fill=True).tolist() == [7, 8, 9, 4, 2]
    assert e.answer_items(3).tolist() == [7, 8, 30]  # default: the held-out items


def test_list_slots_skip_scaffold_repeats_and_non_candidates():
    ex = _example([1, 2], [20, SEP, 22, SEP, 40, SEP, 22, SEP, 21], [20], [20, 21, 22, 23])
    assert list_slots(ex) == [(2, [21, 22, 23], 1), (8, [21, 23], 0)]
    assert list_slots(_example([1], [20], [20], [20, 21])) == []
    assert list_slots(_example([1], [20, SEP, 21], [20], [])) == []


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=50,
        n_positions=32,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def _batch():
    return [
        _example([1, 5, 6], [20, SEP, 22, SEP, 21], [20, 22], [20, 21, 22, 23]),
        _example([1, 7], [23, SEP, 20], [23], [23, 20, 21]),
        _example([1, 8, 9, 10], [21, SEP, 23], [21], [21, 22, 23]),
    ]


def test_list_loss_is_the_candidate_softmax_at_later_slots(model):
    batch = _batch()
    with torch.no_grad():
        plain = answer_loss(model, batch, 0, 0.5)
        listed = answer_loss(model, batch, 0, 0.5, list_weight=2.0)
        manual, n = 0.0, 0
        for e in batch:
            logits = model(torch.tensor([e.ids])).logits[0]
            j0 = len(e.ids) - e.n_answer - 1
            for j, left, k in list_slots(e):
                z = torch.log_softmax(logits[j0 + j, left], -1)
                manual, n = manual - float(z[k]), n + 1
    assert n == 4
    assert float(listed - plain) == pytest.approx(2.0 * manual / n, rel=1e-4)


def test_list_loss_of_process_slices_sums_to_the_full_batch(model):
    """Data parallelism: slices normalised by the global totals add up to the batch's loss."""
    batch = _batch()
    totals = LossTotals.of(batch, 0.0, 1.0)
    with torch.no_grad():
        full = answer_loss(model, batch, 0, 0.5, list_weight=1.0)
        parts = [
            answer_loss(model, batch[i::2], 0, 0.5, totals=totals, list_weight=1.0)
            for i in range(2)
        ]
    assert float(sum(parts)) == pytest.approx(float(full), rel=1e-5)


def _reference_loss(model, batch, answer_weight, prior_weight, vocab_weight, list_weight):
    """The loss written example by example (the definition the batched one must equal)."""
    from llmrec.llm.lora import rank_prior

    totals = LossTotals.of(batch, 0.0, list_weight)
    firsts, rest, listed = [], 0.0, 0.0
    for e in batch:
        logits = model(torch.tensor([e.ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        j0 = len(e.ids) - e.n_answer - 1
        if e.candidates:
            prior = torch.tensor(rank_prior(len(e.candidates)), dtype=torch.float32)
            z = torch.log_softmax(logits[j0, e.candidates] + prior_weight * prior, -1)
            pos = [e.candidates.index(t) for t in e.targets if t in e.candidates]
            f = -z[pos].mean() if pos else torch.zeros(())
            if vocab_weight:
                f = f - vocab_weight * logp[j0, e.targets].mean()
        else:
            f = -logp[j0, e.targets].mean()
        firsts.append(f)
        for t in range(1, e.n_answer):
            rest = rest - logp[j0 + t, e.ids[len(e.ids) - e.n_answer + t]]
        for j, left, k in list_slots(e):
            listed = listed - torch.log_softmax(logits[j0 + j, left], -1)[k]
    loss = torch.stack(firsts).sum() / totals.examples
    loss = loss + answer_weight * rest / totals.answer_tokens
    if list_weight:
        loss = loss + list_weight * listed / totals.list_slots
    return float(loss)


@pytest.mark.parametrize("weights", [(0.5, 0.0, 0.0, 0.0), (1.0, 0.7, 0.5, 2.0)])
def test_batched_loss_equals_the_per_example_definition(model, weights):
    batch = [
        *_batch(),
        _example([1, 4], [30, SEP, 31], [30, 31], []),  # no candidates: whole-vocabulary slot
        _example([1, 4, 4], [20, SEP, 21], [40], [20, 21, 22]),  # no target among candidates
    ]
    with torch.no_grad():
        got = answer_loss(
            model, batch, 0, weights[0], weights[1], weights[2], list_weight=weights[3]
        )
        want = _reference_loss(model, batch, *weights)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_batched_loss_has_finite_gradients(model):
    batch = [*_batch(), _example([1, 4], [30, SEP, 31], [30, 31], [])]
    model.zero_grad()
    answer_loss(model, batch, 0, 0.5, 0.5, 0.5, list_weight=1.0).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()
