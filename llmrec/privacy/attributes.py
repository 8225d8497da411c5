"""Attribute-inference attack (docs/design.md §5.4): how much a user-embedding matrix reveals an attribute.

Protocol of the attribute-unlearning literature:

* labels: one class per user; ``age`` is grouped into the ML-1M bins (<18, 18-24, 25-34,
  35-44, 45-49, 50-55, 56+); classes with fewer than ``min_class_size`` users (default 50, i.e.
  at least 10 test users per class in every fold) are left out: an attacker cannot be
  cross-validated on a handful of users (ml-100k keeps 6 age groups and 7 occupations);
* classes are balanced by down-sampling every class to the smallest one (seeded), so chance
  level is ``1 / n_classes`` for balanced accuracy;
* attackers: scikit-learn ``MLPClassifier(hidden_layer_sizes=(100,))`` and
  ``GradientBoostingClassifier`` on standardised embeddings;
* stratified 5-fold cross-validation; per fold balanced accuracy, macro-F1 and ROC AUC (one-vs-rest
  macro average for more than two classes), reported as the mean (and std) over folds, averaged
  again over ``repeats`` independent down-samplings.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.errors import DataError

if TYPE_CHECKING:
    import torch

ATTACKERS = ("mlp", "gbdt")
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_GROUPS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
DEFAULT_ATTRIBUTES = ("gender", "age", "occupation")


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy array of ``x`` (a torch tensor detached and moved to the CPU)."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def age_group(values: Iterable) -> np.ndarray:
    """ML-1M age group index (0..6) of each age; -1 where the age is missing or not a number."""
    out = []
    for v in values:
        try:
            a = float(v)
        except (TypeError, ValueError):
            out.append(-1)
            continue
        out.append(-1 if np.isnan(a) else int(np.searchsorted(AGE_EDGES, a, side="right")))
    return np.asarray(out, dtype=np.int64)


def attribute_labels(
    ds: Dataset, attribute: str, min_class_size: int = 50
) -> tuple[np.ndarray, list[str]]:
    """Class index per user (``-1``: unknown or in a class smaller than ``min_class_size``) and
    the class names. ``age`` is grouped (module docstring); other attributes are categorical."""
    if attribute not in ds.user_attributes:
        known = ", ".join(ds.user_attributes) or "none"
        raise DataError(f"unknown user attribute {attribute!r} (dataset has: {known})")
    col = ds.users[attribute]
    if attribute == "age":
        codes = age_group(col.tolist())
        names = list(AGE_GROUPS)
    else:
        raw = col.astype(object).where(col.notna(), None).tolist()
        vals = sorted({str(v) for v in raw if v is not None and str(v) != ""})
        index = {v: k for k, v in enumerate(vals)}
        codes = np.asarray(
            [index.get(str(v), -1) if v is not None else -1 for v in raw], dtype=np.int64
        )
        names = vals
    counts = np.bincount(codes[codes >= 0], minlength=len(names))
    keep = np.flatnonzero(counts >= min_class_size)
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    out = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
    return out, [names[k] for k in keep]


def balanced_sample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices (into ``labels``) of a class-balanced down-sample; labels ``< 0`` are ignored."""
    classes = np.unique(labels[labels >= 0])
    if len(classes) < 2:
        raise DataError("attribute inference needs at least two classes")
    m = min(int((labels == c).sum()) for c in classes)
    picks = [rng.choice(np.flatnonzero(labels == c), m, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def _attacker(name: str, seed: int):
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "mlp":
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(100,), random_state=seed),
        )
    if name == "gbdt":
        return GradientBoostingClassifier(random_state=seed)
    raise ValueError(f"attacker must be one of {', '.join(ATTACKERS)}, got {name!r}")


def attack(
    x: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    attacker: str = "mlp",
    folds: int = 5,
    repeats: int = 1,
    seed: int = 2020,
) -> dict:
    """Cross-validated attacker metrics on ``(x, labels)`` (labels ``< 0`` are ignored).

    Returns ``balanced_accuracy``, ``macro_f1``, ``auc`` (means over folds and repeats), their
    ``*_std`` over folds, ``chance`` (1 / classes), ``n_classes`` and ``n_samples`` per repeat.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    x = _numpy(x)
    x = x.astype(np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {"balanced_accuracy": [], "macro_f1": [], "auc": []}
    n_classes = n_samples = 0
    for r in range(repeats):
        idx = balanced_sample(labels, rng)
        xs, ys = x[idx], labels[idx]
        classes, ys = np.unique(ys, return_inverse=True)
        n_classes, n_samples = len(classes), len(ys)
        k = min(folds, int(np.bincount(ys).min()))
        if k < 2:
            raise DataError("attribute inference needs at least two users per class")
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + r)
        for tr, te in cv.split(xs, ys):
            clf = _attacker(attacker, seed + r)
            with warnings.catch_warnings(), threadpool_limits(1):
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(xs[tr], ys[tr])
                proba = clf.predict_proba(xs[te])
            pred = proba.argmax(1)
            scores["balanced_accuracy"].append(balanced_accuracy_score(ys[te], pred))
            scores["macro_f1"].append(f1_score(ys[te], pred, average="macro"))
            if n_classes == 2:
                auc = roc_auc_score(ys[te], proba[:, 1])
            else:
                auc = roc_auc_score(
                    ys[te], proba, multi_class="ovr", average="macro", labels=np.arange(n_classes)
                )
            scores["auc"].append(auc)
    out: dict = {}
    for name, vals in scores.items():
        out[name] = float(np.mean(vals))
        out[f"{name}_std"] = float(np.std(vals))
    out.update(
        chance=1.0 / n_classes,
        n_classes=n_classes,
        n_samples=n_samples,
        attacker=attacker,
        folds=folds,
        repeats=repeats,
    )
    return out


def attribute_inference(
    embeddings: np.ndarray | torch.Tensor,
    ds: Dataset,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    attackers: Sequence[str] = ATTACKERS,
    users: np.ndarray | None = None,
    folds: int = 5,
    repeats: int = 1,
    min_class_size: int = 50,
    seed: int = 2020,
) -> dict[str, dict]:
    """``{attribute: {attacker: metrics, "classes": [...]}}`` for a user-embedding matrix.

    ``users`` restricts the attack to these internal user indices (default: every user with a
    known label).
    """
    x = _numpy(embeddings)
    x = np.asarray(x)
    if x.shape[0] != ds.n_users:
        raise ValueError(f"embeddings have {x.shape[0]} rows, dataset has {ds.n_users} users")
    result: dict[str, dict] = {}
    for a in attributes:
        labels, classes = attribute_labels(ds, a, min_class_size)
        if users is not None:
            mask = np.zeros(ds.n_users, dtype=bool)
            mask[np.asarray(users, dtype=np.int64)] = True
            labels = np.where(mask, labels, -1)
        entry: dict = {"classes": classes}
        for att in attackers:
            entry[att] = attack(x, labels, att, folds=folds, repeats=repeats, seed=seed)
        result[a] = entry
    return result
