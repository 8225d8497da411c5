import numpy as np

from llmrec.data.split import TEST, TRAIN, VALID, _group_counts, leave_one_out, random_split


def test_recbole_rounding():
    n = np.array([20, 9, 5, 2, 100])
    c = _group_counts((0.8, 0.1, 0.1), n)
    assert c.sum(axis=1).tolist() == n.tolist()
    assert c[0].tolist() == [16, 2, 2]
    assert c[1].tolist() == [7, 1, 1]  # 0.9 bumped to 1 for valid and test
    assert c[3].tolist() == [1, 0, 1]  # train keeps one; test bumped first
    assert c[4].tolist() == [80, 10, 10]


def test_random_split_ml100k(ml100k):
    s = random_split(ml100k, seed=2020)
    counts = np.bincount(s.part, minlength=3)
    assert counts.tolist() == [80808, 9596, 9596]
    assert np.array_equal(s.part, random_split(ml100k, seed=2020).part)
    assert not np.array_equal(s.part, random_split(ml100k, seed=7).part)
    # every user has train, valid and test interactions (min 20 per user in ml-100k)
    for p in (TRAIN, VALID, TEST):
        assert len(np.unique(ml100k.inter_user[s.part == p])) == ml100k.n_users


def test_leave_one_out_takes_latest(ml100k):
    s = leave_one_out(ml100k)
    assert np.bincount(s.part).tolist() == [100000 - 2 * 943, 943, 943]
    u = 0
    rows = np.flatnonzero(ml100k.inter_user == u)
    ts = ml100k.timestamp[rows]
    test_row = rows[s.part[rows] == TEST][0]
    assert ml100k.timestamp[test_row] == ts.max()
    valid_row = rows[s.part[rows] == VALID][0]
    assert ml100k.timestamp[valid_row] <= ml100k.timestamp[test_row]
