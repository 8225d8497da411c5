"""``llmrec compare --llm-base`` and ``--eval-users``: the LLM path on another base model, and
every method scored on one seeded user sample (what bounds a slow LLM's serving on a CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.cli.main import main
from llmrec.errors import LlmrecError
from llmrec.experiments.compare import llm as compare_llm
from llmrec.experiments.compare import run_compare
from llmrec.experiments.compare.harness import sample_users
from llmrec.llm.backends.memo import SHARED_MEMO
from llmrec.testing.fixtures import small_workspace
from llmrec.testing.lm import tiny_lm

HP = {"dim": 8, "epochs": 10, "batch_size": 256, "n_neg": 4}
SPEC = "random:10%users"


def test_sample_is_seeded_bounded_and_keeps_both_bias_groups():
    alive = np.arange(100)
    neighbours, controls = np.arange(0, 30), np.arange(30, 60)
    forget = np.arange(100, 120)
    a, nb, ct, fu = sample_users(alive, neighbours, controls, forget, 20, seed=3)
    assert len(a) == 20 and set(a) <= set(alive)
    assert len(nb) == len(ct) == 5 and set(nb) <= set(neighbours) and set(ct) <= set(controls)
    assert set(nb) | set(ct) <= set(a) and len(fu) == 5 and set(fu) <= set(forget)
    again = sample_users(alive, neighbours, controls, forget, 20, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((a, nb, ct, fu), again))
    other = sample_users(alive, neighbours, controls, forget, 20, seed=4)[0]
    assert not np.array_equal(a, other)
    # at most n users: everything is scored
    full = sample_users(alive, neighbours, controls, forget, 100, seed=3)
    assert all(x is y for x, y in zip(full, (alive, neighbours, controls, forget)))
    with pytest.raises(LlmrecError):
        sample_users(alive, neighbours, controls, forget, 0, seed=3)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A compare run whose LLM path serves a model folder outside the workspace (the
    workspace has no built LM: ignoring ``llm_base`` would build the default one)."""
    root = tmp_path_factory.mktemp("cmp-base")
    ws = small_workspace(root)
    lm = tiny_lm(ws, root / "elsewhere" / "lm")

    def small_build(sub, lm_dir, seed, adapters=True, cache_dir=None, source="ease"):
        from retrieval.store import RetrievalStore

        assert not adapters
        RetrievalStore.build(sub, encoder="cf", n_candidates=20, seed=seed, n_clusters=4)

    stored = []  # keys the LLM pipelines put in the process-wide answer memo
    put = SHARED_MEMO.put
    mp = pytest.MonkeyPatch()
    mp.setattr(compare_llm, "build_llm_path", small_build)
    mp.setattr(SHARED_MEMO, "put", lambda key, ranking: (stored.append(key), put(key, ranking)))
    try:
        run = run_compare(
            ws,
            [SPEC],
            ["retrain", "cragru-zeroshot", "candidates"],
            seeds=[3],
            completeness=False,
            model_overrides=HP,
            eval_users=12,
            llm_base=str(lm),
        )
    finally:
        mp.undo()
    return ws, lm, run, stored


def test_every_method_is_scored_on_the_same_sample(base_run):
    ws, lm, run, _ = base_run
    seed = run["scenarios"][SPEC][0]
    assert seed["evaluated_sample"]["users"] == 12
    assert seed["evaluated_sample"]["of"] == ws.dataset.n_users  # interactions removed
    assert seed["evaluated_sample"]["forget_users"] == 3 < len(seed["forget_users"]) == 6
    # bias groups drawn inside the sample, a quarter each
    assert 0 < len(seed["neighbours"]) <= 3 and 0 < len(seed["controls"]) <= 3
    results = json.loads(open(run["results"]).read())
    per = results["scenarios"][SPEC]["seeds"][0]["methods"]
    counts = {m: e["utility"]["all"]["n_users"] for m, e in per.items()}
    assert set(counts.values()) == {12}, counts
    assert "gain_over_candidates" in per["cragru-zeroshot"]  # paired on the same users
    assert per["cragru-zeroshot"]["info"]["base_lm"] == str(lm)
    md = open(run["run_dir"] + "/results.md").read()
    assert "seeded sample of users (12 of" in md and f"base model: {lm}" in md
    assert run["config"]["eval_users"] == 12 and run["config"]["llm_base"] == str(lm)


def test_served_answers_do_not_outlive_the_run(base_run):
    """The LLM pipelines serve through the answer memo, and the run empties it: served
    rankings are user data, and none is left in the process once compare returns."""
    stored = base_run[3]
    assert stored, "the comparison's LLM pipelines did not use the memo"
    assert len(SHARED_MEMO) == 0


def test_named_base_resolves_to_the_workspace_conversion_or_says_how(tmp_path, monkeypatch):
    from llmrec.experiments.compare.llm import resolve_llm_base
    from llmrec.llm import smollm2
    from llmrec.serving.cragru import default_lm_dir, named_base

    ws = small_workspace(tmp_path)
    with pytest.raises(LlmrecError, match="build-lm --init smollm2"):
        named_base(ws, "smollm2")
    with pytest.raises(LlmrecError, match="unknown base"):
        named_base(ws, "gpt-9")
    # no conversion in the workspace: compare converts once into its run's scratch folder
    made = []
    monkeypatch.setattr(smollm2, "convert_smollm2", lambda out, **kw: made.append(out))
    got = resolve_llm_base(ws, tmp_path / "run", "smollm2")
    assert made == [got] and got.parent.name == "workspaces"
    # a workspace whose built LM is the conversion serves that one
    folder = default_lm_dir(ws)
    folder.mkdir(parents=True)
    (folder / "llmrec_lm.json").write_text(json.dumps({"init": "smollm2"}))
    assert named_base(ws, "smollm2") == folder
    assert resolve_llm_base(ws, tmp_path / "run", "smollm2") == folder and len(made) == 1


def test_bad_llm_base_and_sample_are_one_line_errors(tmp_path, capsys):
    ws = small_workspace(tmp_path)
    args = ["compare", "--workspace", str(ws.root), "--scenario", SPEC, "--methods"]
    assert main([*args, "candidates", "--llm-base", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a model folder" in err
    with pytest.raises(SystemExit) as exit_:
        main([*args, "candidates", "--eval-users", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
