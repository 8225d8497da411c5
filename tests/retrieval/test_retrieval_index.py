"""Forget-aware FAISS index: build from factory strings, removal, exclusion, manifest checks."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from llmrec.errors import ArtifactError
from retrieval.index import ForgetAwareIndex, check_factory

FACTORIES = ("Flat", "IVF8,Flat", "HNSW16", "IVF8,SQ8", "PQ4x4")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 16))
    x = centers[rng.integers(10, size=700)] + 0.3 * rng.normal(size=(700, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.arange(700, dtype=np.int64) * 3 + 1


@pytest.mark.parametrize("factory", FACTORIES)
def test_build_search_remove(data, factory):
    x, ids = data
    index = ForgetAwareIndex.build(x, ids, factory, encoder="synthetic", ledger_version=4)
    assert index.ntotal == len(ids) and np.array_equal(index.ids, ids)
    assert index.native_ids == factory.startswith("IVF")
    _, hits = index.search(x[:5], 10)
    assert np.isin(hits[hits >= 0], ids).all()
    gone = ids[[0, 1, 2, 50]]
    assert index.remove(np.append(gone, 10**9)) == 4  # an absent id is ignored
    assert index.ntotal == len(ids) - 4 and not np.isin(index.ids, gone).any()
    _, hits = index.search(x[:50], 20)
    assert not np.isin(hits, gone).any()
    assert index.remove(gone) == 0
    assert index.vectors().shape == (len(ids) - 4, 16)


def test_flat_removal_equals_fresh_build(data):
    x, ids = data
    index = ForgetAwareIndex.build(x, ids, "Flat")
    assert index.removal_is_exact
    drop = np.array([4, 100, 1000, 1201], dtype=np.int64)
    index.remove(drop)
    keep = ~np.isin(ids, drop)
    fresh = ForgetAwareIndex.build(x[keep], ids[keep], "Flat")
    assert np.array_equal(index.ids, fresh.ids)
    assert np.array_equal(index.vectors(), fresh.vectors())
    assert np.array_equal(faiss.serialize_index(index.index), faiss.serialize_index(fresh.index))
    for a, b in zip(index.search(x[:30], 15), fresh.search(x[:30], 15)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("factory", ["IVF8,Flat", "HNSW16"])
def test_builds_are_deterministic(data, factory):
    x, ids = data
    a = ForgetAwareIndex.build(x, ids, factory)
    b = ForgetAwareIndex.build(x, ids, factory)
    assert np.array_equal(faiss.serialize_index(a.index), faiss.serialize_index(b.index))
    assert not a.removal_is_exact  # trained / graph indexes are rebuilt by the store


def test_search_exclusion(data):
    x, ids = data
    for factory in FACTORIES:
        index = ForgetAwareIndex.build(x, ids, factory)
        _, top = index.search(x[:3], 5)
        excl = top[:, :2].ravel()
        _, hits = index.search(x[:3], 5, exclude=excl)
        assert not np.isin(hits, excl).any()
        per = [top[0, :1], np.zeros(0, np.int64), top[2, :3]]
        _, hits = index.search(x[:3], 5, exclude=per)
        assert top[0, 0] not in hits[0] and not np.isin(top[2, :3], hits[2]).any()
        assert hits[1, 0] == top[1, 0]
    with pytest.raises(ValueError, match="exclusion lists"):
        index.search(x[:3], 5, exclude=[excl])


def test_exclusion_leaves_fewer_results_than_k(data):
    x, ids = data
    index = ForgetAwareIndex.build(x[:6], ids[:6], "Flat")
    scores, hits = index.search(x[:1], 6, exclude=ids[:4])
    assert list(hits[0, 2:]) == [-1] * 4 and np.isin(hits[0, :2], ids[4:6]).all()


def test_save_load_manifest_and_staleness(data, tmp_path):
    x, ids = data
    index = ForgetAwareIndex.build(x, ids, "IVF8,Flat", encoder="text-model", ledger_version=3)
    index.remove(ids[:10])
    man_path = index.save(tmp_path / "items.faiss")
    man = json.loads(man_path.read_text())
    assert man["ids"] == ids[10:].tolist() and man["factory"] == "IVF8,Flat"
    assert man["encoder"] == "text-model" and man["ledger_version"] == 3
    back = ForgetAwareIndex.load(man_path, ledger_version=3, encoder="text-model")
    assert np.array_equal(back.ids, index.ids)
    assert np.array_equal(back.vectors(), index.vectors())
    assert np.array_equal(back.search(x[:4], 7)[1], index.search(x[:4], 7)[1])
    with pytest.raises(ArtifactError, match="stale"):
        ForgetAwareIndex.load(man_path, ledger_version=4)
    with pytest.raises(ArtifactError, match="expected 'cf"):
        ForgetAwareIndex.load(man_path, encoder="cf-bpr")
    man["ids"] = man["ids"][1:]  # a manifest that disagrees with the index file
    man_path.write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="ids differ"):
        ForgetAwareIndex.load(man_path)
    (tmp_path / "items.faiss").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="unreadable"):
        ForgetAwareIndex.load(man_path)
    with pytest.raises(ArtifactError, match="not found"):
        ForgetAwareIndex.load(tmp_path / "missing.json")


def test_bad_inputs(data):
    x, ids = data
    with pytest.raises(ValueError, match="factory"):
        ForgetAwareIndex(16, "NotAnIndex")
    with pytest.raises(ValueError, match="IDMap"):
        check_factory("IDMap2,Flat")
    with pytest.raises(ValueError, match="parse"):
        check_factory("Flaat")
    check_factory("IVF4096,PQ16")
    index = ForgetAwareIndex.build(x[:10], ids[:10])
    with pytest.raises(ValueError, match="unique"):
        index.add(x[:1], ids[:1])
    with pytest.raises(ValueError, match=r"\[n, 16\]"):
        index.add(x[:2, :8], np.array([7000, 7001]))
    with pytest.raises(ValueError, match="metric"):
        ForgetAwareIndex(16, metric="cosine")
