"""User shards and the self-supervised training data of one shard's adapter.

Users are split into ``S`` shards by a seeded hash of their token (stable under any forget
request: removing a user never moves another user). An adapter is tuned only on its shard's
retained TRAIN interactions and visible profiles, so a request touches only the shards holding
the forgotten data.

Training examples mask items *inside* the train history (no valid/test leakage): per epoch and
user, a seeded draw holds out a few train items as targets; the rest is the history shown in the
prompt; the candidate list is the targets plus the items ranked highest for that history by the
serving co-occurrence candidate model (:class:`retrieval.candidates.CooccurrenceModel`) counted on the
shard's kept histories alone (targets excluded, as test items are at serving time), in that
generator's order -- the same shape as the candidate lists served at
inference. Everything derives from the shard's own retained data, so
the examples (and their hash) change exactly when that data changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from llmrec.data.dataset import Dataset
from llmrec.data.retained import RetainedView
from llmrec.data.split import TRAIN, Split
from retrieval.candidates import CooccurrenceConfig, CooccurrenceModel, user_rows


def shard_of(user_tokens: np.ndarray, n_shards: int, seed: int) -> np.ndarray:
    """Shard index of every user: ``sha256(f"{seed}:{token}") mod n_shards``."""
    if n_shards < 1:
        raise ValueError(f"need at least one shard, got {n_shards}")
    out = np.empty(len(user_tokens), dtype=np.int64)
    for k, t in enumerate(user_tokens):
        digest = hashlib.sha256(f"{seed}:{t}".encode()).digest()
        out[k] = int.from_bytes(digest[:8], "big") % n_shards
    return out


@dataclass
class UserRecord:
    """One user's retained train history and visible profile."""

    user: int
    attributes: dict
    items: np.ndarray
    ratings: np.ndarray | None


@dataclass
class ShardData:
    """The retained training data of one shard (users in index order)."""

    shard: int
    n_items: int
    users: list[UserRecord] = field(default_factory=list)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(u.items) for u in self.users))


def shard_data(
    ds: Dataset, split: Split, view: RetainedView, assignment: np.ndarray, shard: int
) -> ShardData:
    """Retained TRAIN data of the users of ``shard`` (forgotten users and items excluded)."""
    mask = split.mask(TRAIN, view.keep) & (assignment[ds.inter_user] == shard)
    idx = np.flatnonzero(mask)
    order = np.lexsort((ds.inter_item[idx], ds.inter_user[idx]))
    idx = idx[order]
    users = ds.inter_user[idx]
    out = ShardData(shard, ds.n_items)
    bounds = np.flatnonzero(np.diff(users)) + 1
    for chunk in np.split(idx, bounds) if len(idx) else []:
        u = int(ds.inter_user[chunk[0]])
        if view.forgotten_users[u]:
            continue
        out.users.append(
            UserRecord(
                u,
                view.visible_attributes(u),
                ds.inter_item[chunk].copy(),
                None if ds.rating is None else ds.rating[chunk].copy(),
            )
        )
    return out


@dataclass
class Example:
    """One self-supervised training prompt: targets are held-out train items; the candidates
    are the generator's natural top list (targets are in it only where the generator ranks
    them there, exactly as test items at serving time)."""

    user: int
    attributes: dict
    history_items: np.ndarray
    history_ratings: np.ndarray | None
    candidates: np.ndarray
    targets: np.ndarray

    def answer_items(self, k: int, fill: bool = False) -> np.ndarray:
        """Up to ``k`` items for the written answer: the targets, those in the candidate list
        first; with ``fill`` the answer ranks the candidate list itself -- the targets among
        the candidates, then the other candidates, each part in the generator's order -- so
        every answer entry is a candidate, as a served answer must be."""
        inside = np.isin(self.targets, self.candidates)
        if fill:
            hit = np.isin(self.candidates, self.targets)
            return np.concatenate([self.candidates[hit], self.candidates[~hit]])[:k]
        return np.concatenate([self.targets[inside], self.targets[~inside]])[:k]


@dataclass(frozen=True)
class ExampleSettings:
    """How examples are drawn (see module docstring)."""

    history: int = 50
    n_candidates: int = 50
    holdout: float = 0.2
    max_targets: int = 10
    min_items: int = 3
    answer_fill: bool = False  # the answer ranks the candidate list (Example.answer_items)
    cold: float = 0.0  # share of an epoch's examples shown with no history (see epoch_examples)
    generator: dict[str, float] = field(default_factory=lambda: {"text_weight": 0.0})

    def generator_config(self) -> CooccurrenceConfig:
        """Candidate-generator settings (library defaults overridden by :attr:`generator`);
        no text blend by default, since serving may use CF item vectors, which are user data."""
        return CooccurrenceConfig(**{**CooccurrenceConfig().to_dict(), **self.generator})


def epoch_examples(
    data: ShardData, settings: ExampleSettings, seed: int, epoch: int
) -> list[Example]:
    """The examples of one epoch, in user order; a pure function of its arguments."""
    rng = np.random.default_rng([seed, data.shard, epoch])
    drawn = []
    for rec in data.users:
        n = len(rec.items)
        if n < settings.min_items:
            continue
        m = int(np.clip(round(settings.holdout * n), 1, settings.max_targets))
        perm = rng.permutation(n)
        if settings.cold > 0 and rng.random() < settings.cold:
            # a user without retained history (as a forget user is served): only the profile
            # shows, the targets are any of the user's items, the candidates the generator's
            # order for an empty history (popularity)
            drawn.append((rec, perm[: min(n, settings.max_targets)], perm[:0]))
            continue
        drawn.append((rec, perm[:m], perm[m:]))
    if not drawn:
        return []
    # the generator is counted on the *kept* histories only: like test items at serving time,
    # the targets are absent from the statistics that rank them
    kept_rows = [np.unique(rec.items[kept]) for rec, _, kept in drawn]
    rows = user_rows(data.n_items, kept_rows)
    gen = CooccurrenceModel.build(settings.generator_config(), rows, len(kept_rows))
    scores = gen.scores(rows)
    in_shard = np.zeros(data.n_items, dtype=bool)
    for rec in data.users:
        in_shard[rec.items] = True
    out = []
    for (rec, tpos, kpos), s in zip(drawn, scores):
        targets = rec.items[tpos]
        allowed = in_shard.copy()
        allowed[rec.items] = False
        allowed[targets] = True
        pool = np.flatnonzero(allowed)
        cands = pool[np.lexsort((pool, -s[pool]))][: settings.n_candidates]
        hist = kpos[: settings.history]
        out.append(
            Example(
                rec.user,
                rec.attributes,
                rec.items[hist],
                None if rec.ratings is None else rec.ratings[hist],
                cands,
                targets,
            )
        )
    return out
