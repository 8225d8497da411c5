"""How a toolkit-built base LM is tuned and served: one recipe per starting point.

The base model's manifest names its starting point (``init``) and the template it was adapted
with; :func:`adapter_config` and :func:`serving` turn that into the adapter settings and the
serving options the default path uses, so ``build-lm``, ``adapters tune`` and serving agree on
one prompt format and one budget. Any other model (a hub LLM) gets the library defaults.

The MiniLM recipe (measured in ``docs/default_lm.md``) keeps the CPU budget: the LoRA adapter
sits on the last transformer layer and the LM-head transform, and the per-item rows are trained
in the output head only, so the backward pass never runs through the lower layers; item rows
start from the base model's (text-initialised) rows instead of a common mean, and the adapter
learns the whole preference (no candidate prior inside the loss) -- the served score is blended
with the candidate order afterwards, with a weight tuned on VALID.

Two named MiniLM recipes (:data:`RECIPES`): ``quality``, the default, three epochs on answers
that rank the whole candidate list (held-out items first, then the other candidates in the
generator's order) with a candidate-softmax loss at every later answer slot (``list_weight``);
and ``fast``, one epoch on answers of the held-out items, about a third of the tuning time, which
``llmrec compare`` uses (:data:`COMPARE_RECIPE`) because it tunes every shard three times. On the
default path ``quality`` is the one that keeps json mode's fallback under 10% (2.2% against
13.9%) and brings the LM alone to 0.785x the candidate order instead of 0.75x
(``docs/default_lm.md``).

The SmolLM2 recipe (``build-lm --init smollm2``, :mod:`llmrec.llm.smollm2`) serves the real
instruct LLM as CRAGRU runs one: the ``cragru`` prompt through the model's ChatML chat template,
item ids spelled as text, a JSON answer; 20 candidates and history filled to the prompt budget
written in the converted tokenizer. Its LoRA adapter is vLLM-servable: rank in
:data:`VLLM_RANKS`, on the Llama attention and MLP projections only (no ``modules_to_save``, no
trainable token rows), and only in the last :data:`SMOLLM2_LORA_LAYERS` layers, so the backward
pass runs through a few of the 30 layers (CPU tuning; the forward pass still reads them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmrec.llm.lm_builder import read_manifest
from llmrec.llm.lora import LoraSettings
from llmrec.llm.shards import ExampleSettings


@dataclass(frozen=True)
class Serving:
    """Prompt material served per user: template, history entries offered to the token budget,
    candidates ranked by the LM, held-out items written in a tuning answer."""

    template: str | None = None
    history: int = 50
    n_candidates: int = 50
    answer_items: int = 3


#: LoRA ranks vLLM serves (``--max-lora-rank`` choices)
VLLM_RANKS = (8, 16, 32, 64, 128, 256)
#: the Llama projections a SmolLM2 adapter targets (attention and MLP; nothing else)
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: SmolLM2's adapter sits on the projections of its last layers only (CPU backward cost)
SMOLLM2_LORA_LAYERS = 4


#: the named recipes of a toolkit-built MiniLM base (module docstring); other bases ignore them
RECIPES = ("quality", "fast")
DEFAULT_RECIPE = "quality"
#: the recipe ``llmrec compare`` tunes with: it tunes every shard three times (before and after
#: the request, and the from-scratch gold) inside its time budget (docs/default_lm.md)
COMPARE_RECIPE = "fast"


def _check(recipe: str) -> bool:
    """Whether ``recipe`` is the ``quality`` one; ``ValueError`` for an unknown name."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (expected one of: {', '.join(RECIPES)})")
    return recipe == "quality"


def _init(base: str | Path) -> str | None:
    man = read_manifest(base) if Path(base).is_dir() else None
    return None if man is None else man.get("init", "scratch")


def serving(base: str | Path) -> Serving:
    """Serving options for the base model at ``base``."""
    man = read_manifest(base) if Path(base).is_dir() else None
    if man is None:
        return Serving()
    if man.get("init") == "minilm":
        return Serving(template=man["template"], history=50, n_candidates=20, answer_items=10)
    if man.get("init") == "smollm2":
        return Serving(template=man["template"], history=50, n_candidates=20, answer_items=3)
    return Serving(template=man.get("template") or man.get("config", {}).get("template"))


def lora_settings(
    base: str | Path,
    epochs: int | None = None,
    n_layer: int | None = None,
    recipe: str = DEFAULT_RECIPE,
) -> LoraSettings:
    """Adapter settings for the base model at ``base`` (library defaults for other models)."""
    quality = _check(recipe)
    init = _init(base)
    if init not in ("minilm", "smollm2"):
        return LoraSettings() if epochs is None else LoraSettings(epochs=epochs)
    if n_layer is None:
        from transformers import AutoConfig

        n_layer = AutoConfig.from_pretrained(str(base)).num_hidden_layers
    if init == "smollm2":
        return smollm2_lora(epochs, n_layer)
    top = n_layer - 1
    return LoraSettings(
        r=8,
        target_modules=rf".*encoder\.layer\.{top}\.attention\.self\.(query|value)|.*transform\.dense",
        item_token_layers="output",
        epochs=(3 if quality else 1) if epochs is None else epochs,
        batch_size=16,
        lr=2e-3,
        item_lr=3e-3,
        prior_weight=0.0,
        zero_residual=False,
        answer_weight=0.5,
        vocab_weight=0.5,
        list_weight=1.0 if quality else 0.0,
    )


def llama_targets(n_layer: int, last: int) -> str:
    """peft ``target_modules`` regex: the Llama projections of the last ``last`` layers."""
    layers = "|".join(str(k) for k in range(max(0, n_layer - last), n_layer))
    return rf".*layers\.({layers})\.(self_attn|mlp)\.({'|'.join(LLAMA_PROJECTIONS)})"


def smollm2_lora(epochs: int | None = None, n_layer: int = 30) -> LoraSettings:
    """The SmolLM2 adapter (module docstring): rank 8, projections of the last layers."""
    return LoraSettings(
        r=8,
        target_modules=llama_targets(n_layer, SMOLLM2_LORA_LAYERS),
        item_tokens=False,
        epochs=1 if epochs is None else epochs,
        batch_size=4,
        lr=2e-4,
        prior_weight=0.0,
        zero_residual=False,
    )


def example_settings(base: str | Path, recipe: str = DEFAULT_RECIPE) -> ExampleSettings:
    """Training-example settings matching :func:`serving` (candidate-list length)."""
    s = serving(base)
    # the quality recipe's answers rank the whole candidate list (docs/default_lm.md)
    fill = _check(recipe) and _init(base) == "minilm"
    return ExampleSettings(history=s.history, n_candidates=s.n_candidates, answer_fill=fill)
