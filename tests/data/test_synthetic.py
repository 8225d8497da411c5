import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from llmrec.cli.main import main
from llmrec.data.dataset import load_dataset
from llmrec.data.synthetic import SyntheticSpec, write_synthetic


def test_exact_size_power_law_and_determinism(tmp_path):
    spec = SyntheticSpec(20_000, seed=3)
    write_synthetic(spec, tmp_path / "a", "s")
    write_synthetic(spec, tmp_path / "b", "s")
    a = (tmp_path / "a" / "s" / "s.inter").read_bytes()
    assert a == (tmp_path / "b" / "s" / "s.inter").read_bytes()
    ds = load_dataset("s", tmp_path / "a")
    assert ds.n_inter == 20_000 and len(np.unique(ds.pair_keys)) == 20_000
    pop = np.sort(np.bincount(ds.inter_item, minlength=ds.n_items))[::-1]
    assert pop[: ds.n_items // 10].sum() > 0.2 * ds.n_inter  # heavy head: twice the uniform share
    assert ds.item_text(0).count("|") == 1 and {"age", "gender", "occupation"} <= set(
        ds.user_attributes
    )


def test_attributes_are_predictable_from_behaviour(tmp_path):
    write_synthetic(SyntheticSpec(30_000, seed=1), tmp_path, "s")
    ds = load_dataset("s", tmp_path)
    x = np.zeros((ds.n_users, ds.n_items))
    x[ds.inter_user, ds.inter_item] = 1
    y = (ds.users["gender"] == "F").to_numpy()
    acc = cross_val_score(
        LogisticRegression(max_iter=300, C=0.1), x, y, cv=3, scoring="balanced_accuracy"
    ).mean()
    assert acc > 0.6


def test_cli_synth(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "synth",
                "--interactions",
                "5000",
                "--out",
                str(tmp_path),
                "--name",
                "x",
                "--json",
            ]
        )
        == 0
    )
    assert load_dataset("x", tmp_path).n_inter == 5000
