"""The LLM path on tiny random checkpoints of eight real Hugging Face families.

Llama, Qwen2, Mistral, GPT-NeoX, Phi-3, Gemma, OPT and GPT-2 (1024 positions), each with a
tokenizer trained here in its family's style (SentencePiece-like BPE/Unigram with metaspace and
BOS, byte-level BPE; with and without pad token and chat template), go through ``adapters tune``
with a *relative* ``--model`` path -> ``recommend`` in every mode -> ``forget`` from another
directory, offline -> re-tune -> ``audit``. For each family: the served prompt of a user with
more than 50 retained items holds the instruction, the profile, every candidate and exactly the
greedy fill of history; tuning and serving encode a prompt to the same token ids; batched and
one-by-one likelihood scores agree (and KV-cache reuse agrees with recomputation); constrained
decoding writes exact candidate ids only; an edited base fails the audit, a missing one fails
the forget stage with one line.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from llmrec.cli.main import main
from llmrec.data.synthetic import SyntheticSpec, write_synthetic
from llmrec.llm.adapters import ShardTrainingData, adapters_root, load_config
from llmrec.llm.catalog import Catalog
from llmrec.llm.prompt import UserContext
from llmrec.llm.shards import epoch_examples, shard_of
from llmrec.llm.tiny_models import FAMILIES, build_tiny, catalog_corpus_text
from llmrec.serving.cragru import CragruOptions, CragruPipeline
from llmrec.workspace import Workspace
from retrieval.store import RetrievalStore

HEAVY = "1"  # the user given an interaction with every item


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("matrix")
    folder = write_synthetic(SyntheticSpec(700, users=20, items=90, seed=5), root / "data", "syn")
    inter = pd.read_csv(folder / "syn.inter", sep="\t", dtype=str)
    items = pd.read_csv(folder / "syn.item", sep="\t", dtype=str)["item_id:token"]
    seen = set(inter.loc[inter["user_id:token"] == HEAVY, "item_id:token"])
    extra = [i for i in items if i not in seen]
    rows = pd.DataFrame(
        {
            "user_id:token": HEAVY,
            "item_id:token": extra,
            "rating:float": [str(1 + k % 5) for k in range(len(extra))],
            "timestamp:float": [str(1.1e9 + k) for k in range(len(extra))],
        }
    )
    pd.concat([inter, rows]).to_csv(folder / "syn.inter", sep="\t", index=False)
    ws = Workspace(root / "probe", dataset="syn", data_dir=root / "data")
    corpus = catalog_corpus_text(Catalog.from_dataset(ws.dataset))
    return root, corpus


def run(capsys, *argv):
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def greedy_history(builder, ctx: UserContext) -> int:
    """Reference fill: add history entries one by one while the prompt still fits."""
    budget = builder.limit - builder.answer_reserve()
    n = 0
    while n < len(ctx.history_items):
        ids = builder.token_ids([builder.render(ctx, n + 1)])[0]
        if len(ids) > budget:
            break
        n += 1
    return n


def check_prompt(pipe: CragruPipeline, user: int) -> UserContext:
    gen = pipe.backend
    ctx = pipe.context(user)
    assert len(ctx.history_items) >= 50  # the store gives the strategy's top 50
    enc = gen.prompt(ctx)
    n = greedy_history(gen.builder, ctx)
    assert enc.n_history == n and 0 < n < len(ctx.history_items)
    assert enc.text == gen.builder.render(ctx, n) and len(enc.ids) <= gen.builder.limit
    tpl = gen.builder.template
    assert tpl.instruction.format(n_candidates=len(ctx.candidates), top_k=gen.top_k) in enc.text
    assert tpl.render_profile(dict(ctx.attributes)) in enc.text
    for i in ctx.candidates:
        assert f"- {gen.verbalizer(int(i))}: {pipe.catalog.titles[int(i)]}" in enc.text
    assert enc.text.endswith(tpl.answer_prefix)
    if gen.builder.bos_id is not None:  # BOS once, whether or not the chat template writes it
        assert enc.ids[0] == gen.builder.bos_id and enc.ids[1] != gen.builder.bos_id
    return ctx


def check_tuning_prompt_equals_served(ws: Workspace, pipe: CragruPipeline) -> None:
    cfg = load_config(ws)
    data = ShardTrainingData(ws, cfg, 0, None)
    (e, *_) = epoch_examples(data.data, cfg.examples, cfg.seed, 0)
    ctx = UserContext(e.user, e.attributes, e.history_items, e.history_ratings, e.candidates)
    served = pipe.backend.builder.encode(ctx).ids
    assert data.builder.encode(ctx).ids == served
    ex = data.example(e)
    cut = len(ex.ids) - ex.n_answer
    assert 0 < cut <= len(served) and ex.ids[:cut] == served[:cut]


def check_likelihood(pipe: CragruPipeline, users: list[int]) -> None:
    gen = pipe.backend
    ctxs = [pipe.context(u) for u in users]
    adapter = pipe.adapter_for(users[0])
    gen.batch_size = len(users)
    together = gen.rank(ctxs, "likelihood", adapter=adapter)
    gen.batch_size = 1
    alone = [gen.rank([c], "likelihood", adapter=adapter)[0] for c in ctxs]
    gen.kv_cache = False
    recomputed = gen.rank(ctxs, "likelihood", adapter=adapter)
    gen.kv_cache = True
    for a, b, c in zip(together, alone, recomputed):
        sa, sb, sc = (dict(zip(r.items.tolist(), r.scores)) for r in (a, b, c))
        assert sa.keys() == sb.keys() == sc.keys()
        assert max(abs(sa[i] - sb[i]) for i in sa) < 1e-4
        assert max(abs(sa[i] - sc[i]) for i in sa) < 1e-4


def check_constrained(pipe: CragruPipeline, user: int) -> None:
    (r,) = pipe.recommend([user], "constrained")
    cands = {pipe.backend.verbalizer(int(i)) for i in pipe.context(user).candidates}
    ids = re.findall(r'"([^"]*)": \d+', r.text)
    assert re.fullmatch(r'\{("[^"]+": \d+, )*"[^"]+": \d+\}', r.text), r.text
    assert ids and set(ids) <= cands and len(ids) == len(set(ids)) == pipe.opt.top_k
    assert not r.fallback and r.report.unknown == r.report.not_candidate == 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_tune_serve_forget_audit(family, dataset, tmp_path, monkeypatch, capsys):
    root, corpus = dataset
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    home = tmp_path / "project"
    ws = Workspace(home / "ws", dataset="syn", data_dir=root / "data")
    ds = ws.dataset
    build_tiny(family, home / "models" / family, corpus, positions=1024, vocab_size=600)
    RetrievalStore.build(ws, encoder="cf", n_candidates=12, seed=3, n_clusters=4)
    monkeypatch.chdir(home)
    w = ["--workspace", "ws"]
    code, rep, err = run(
        capsys, "adapters", "tune", *w, "--model", f"models/{family}", "--shards", "2",
        "--epochs", "1", "--batch-size", "8", "--template", "cragru", "--candidates", "12", "--history", "10",
    )  # fmt: skip
    assert code == 0 and rep["retuned"] == [0, 1], err
    cfg = load_config(ws)
    assert cfg.base == str((home / "models" / family).resolve()) and cfg.template == "cragru"
    assert cfg.contract["bos"] == FAMILIES[family].bos

    # no model named: the adapters' own base, template and contract
    pipe = CragruPipeline(ws, CragruOptions(n_candidates=12))
    heavy = ds.user_index(HEAVY)
    check_prompt(pipe, heavy)
    check_tuning_prompt_equals_served(ws, pipe)
    assign = shard_of(ds.user_tokens, cfg.n_shards, cfg.seed)
    same = [u for u in range(ds.n_users) if assign[u] == assign[heavy]][:3]
    check_likelihood(pipe, same)
    check_constrained(pipe, heavy)
    for mode in ("likelihood", "json", "constrained", "verbalizer"):
        code, res, err = run(capsys, "recommend", *w, "--user", HEAVY, "--mode", mode,
                             "--candidates", "12", "--show-prompt")  # fmt: skip
        assert code == 0, err
        assert res["template"] == "cragru" and res["adapter"] == pipe.adapter_for(heavy)
        assert res["prompt"] == pipe.backend.prompt(pipe.context(heavy), mode).text
        assert len(res["items"]) == pipe.opt.top_k

    # forget a user of the other shard from another directory, offline
    other = next(u for u in range(ds.n_users) if assign[u] != assign[heavy])
    req = tmp_path / "req.jsonl"
    req.write_text(json.dumps({"kind": "user", "users": [str(ds.user_tokens[other])]}) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    w = ["--workspace", str(home / "ws")]
    code, res, err = run(capsys, "forget", *w, "--request", str(req))
    assert code == 0, err
    assert res["stages"]["adapters"]["retuned"] == [int(assign[other])]
    code, res, err = run(capsys, "audit", *w)
    assert code == 0 and res["ok"], res["violations"]

    # an edited base fails the audit, naming it; a missing base fails forget in one line
    base = Path(cfg.base)
    weights = next(p for p in sorted(base.iterdir()) if p.suffix in (".safetensors", ".bin"))
    original = weights.read_bytes()
    weights.write_bytes(original + b"\0")
    code, res, _ = run(capsys, "audit", *w)
    assert code == 1 and any(str(base) in v["problem"] for v in res["violations"])
    weights.write_bytes(original)
    shutil.move(base, tmp_path / "moved")
    req.write_text(json.dumps({"kind": "user", "users": [str(ds.user_tokens[same[-1]])]}) + "\n")
    code, _, err = run(capsys, "forget", *w, "--request", str(req))
    assert code != 0 and "base model" in err and len(err.strip().splitlines()) == 1
    shutil.move(tmp_path / "moved", base)
    code, res, err = run(capsys, "forget", *w)  # resumes the pending adapters stage
    assert code == 0, err
    assert (adapters_root(ws) / "config.json").is_file()
    code, res, _ = run(capsys, "audit", *w)
    assert code == 0 and res["ok"], res["violations"]


def test_opt_checkpoint_is_hashed_from_its_bin_weights(tmp_path, dataset):
    """A ``.bin``-only base still has an identity: its weights hash changes with its bytes."""
    from llmrec.llm.loading import weights_hash

    _, corpus = dataset
    from transformers import AutoModelForCausalLM

    d = build_tiny("opt", tmp_path / "opt", corpus[:200], vocab_size=300)
    model = AutoModelForCausalLM.from_pretrained(str(d))
    for p in d.glob("*.safetensors"):
        p.unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    before = weights_hash(str(d))
    AutoModelForCausalLM.from_pretrained(str(d))  # transformers loads the .bin folder
    with open(d / "pytorch_model.bin", "ab") as fh:
        fh.write(b"\0")
    assert weights_hash(str(d)) != before
