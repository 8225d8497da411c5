"""An exactly unlearnable co-occurrence candidate model on user-weighted item co-occurrence statistics.

Statistics (integers, so that forgetting is an exact decrement):

* ``degree[i]`` — number of users whose retained training history holds item ``i``;
* ``counts[i, j] = sum_u w(u) x_ui x_uj`` — co-occurrence where each user ``u`` with ``n_u``
  distinct retained training items weighs ``w(u) = round(scale / n_u ** p)`` (heavy users count
  less, as in inverse user frequency). ``w`` is an integer, so ``counts`` is an exact sum of
  per-user integer blocks.

Forgetting anything that changes the rows of some users (interactions, users, items) replaces
their blocks: ``counts += X_new^T W_new X_new - X_old^T W_old X_old`` over the affected users only
(their weights change with their history length). The result is bit-identical to the statistics
counted from scratch on the retained data. Only the statistics are stored; the model is a pure
function of them, computed on demand (and again after every change).

Two models on the same statistics (``CooccurrenceConfig.model``):

* ``"ease"`` (default) — EASE (Steck, WWW 2019): ``G = counts * sum(degree) / trace(counts)``
  (the weighted co-occurrence on the scale of plain counts), ``P = (G + l2 I)^-1``,
  ``B = -P / diag(P)`` with a zero diagonal, ``score(u) = x_u B``. The inverse is recomputed
  from the exact statistics (one Cholesky, single-threaded, about 0.3 s for 1.7k items) on the
  first request after a change, so the served model is bit-identical to a build from scratch.
  Suits catalogues up to roughly 10-20k items.
* ``"knn"`` — item-based neighbourhood scores (asymmetric cosine), linear and without any
  inversion, for large catalogues:
  ``knn(u, j) = sum_{i in u} counts[i, j] / (deg_i ** alpha * deg_j ** (1 - alpha))``.

Either score is divided by ``deg_j ** beta`` (popularity penalty) and normalised by the user's
maximum, plus ``text_weight`` times the cosine between item ``j``'s embedding and the mean
embedding of the user's items, plus a 1e-6 popularity tie-breaker (which also ranks items for
users without retained history). The defaults (:meth:`CooccurrenceConfig.preset`) were chosen on
ml-100k's *validation* part (RS 8:1:1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg.lapack as lapack
import scipy.sparse as sp

from retrieval.threads import single_blas_thread

POPULARITY_TIEBREAK = 1e-6
MODELS = ("ease", "knn")


@dataclass(frozen=True)
class CooccurrenceConfig:
    """Hyper-parameters of :class:`CooccurrenceModel` (see the module docstring)."""

    model: str = "ease"
    user_weight_power: float = 0.3
    l2: float = 400.0
    alpha: float = 0.75
    beta: float = 0.15
    text_weight: float = 0.0
    scale: int = 1 << 16

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"candidate model must be one of {', '.join(MODELS)}")

    @classmethod
    def preset(cls, model: str = "ease") -> CooccurrenceConfig:
        """The settings tuned on ml-100k validation for ``model`` ("ease" or "knn")."""
        if model == "knn":
            return cls(model="knn", user_weight_power=0.7, alpha=0.75, beta=0.4, text_weight=0.1)
        return cls(model=model)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CooccurrenceConfig:
        return cls(**d)


def user_rows(n_items: int, rows: list[np.ndarray]) -> sp.csr_matrix:
    """Binary CSR matrix (int64) with one row per item array (sorted unique item indices)."""
    lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(lens)])
    indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    data = np.ones(len(indices), dtype=np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_items))


def entry_hash(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """Pseudo-random uint64 weight of each matrix entry (splitmix64 of its flat position)."""
    x = rows.astype(np.uint64) * np.uint64(n) + cols.astype(np.uint64)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def counts_checksum(counts: np.ndarray) -> int:
    """``sum_ij counts[i, j] * entry_hash(i, j) mod 2**64``: cheap to update entry-wise."""
    n = counts.shape[0]
    total = np.uint64(0)
    with np.errstate(over="ignore"):
        for start in range(0, n, 256):
            block = counts[start : start + 256].astype(np.uint64)
            r, c = np.indices(block.shape, dtype=np.uint64)
            total += (block * entry_hash(r + np.uint64(start), c, n)).sum(dtype=np.uint64)
    return int(total)


class CooccurrenceModel:
    """Integer co-occurrence statistics plus the scoring rule built on them.

    ``checksum`` (see :func:`counts_checksum`) is kept up to date by :meth:`update`, so a saved
    copy of ``counts`` can be verified without rewriting it.
    """

    def __init__(
        self,
        config: CooccurrenceConfig,
        counts: np.ndarray,
        degree: np.ndarray,
        checksum: int | None = None,
    ) -> None:
        self.config = config
        self.counts = counts
        self.degree = degree
        self.checksum = counts_checksum(counts) if checksum is None else int(checksum)
        self._counts_f: np.ndarray | None = None
        self._weights: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.degree)

    @staticmethod
    def count_dtype(config: CooccurrenceConfig, n_users: int) -> type:
        """int32 when ``n_users * scale`` cannot overflow it, else int64."""
        return np.int32 if n_users * config.scale < 2**31 else np.int64

    def weights(self, lengths: np.ndarray) -> np.ndarray:
        """Integer user weights ``round(scale / n_u ** p)`` (0 for empty histories)."""
        n = np.asarray(lengths, dtype=np.float64)
        w = np.rint(self.config.scale / np.maximum(n, 1.0) ** self.config.user_weight_power)
        return np.where(n > 0, np.maximum(w, 1), 0).astype(np.int64)

    def _gram(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        w = self.weights(rows.getnnz(axis=1))
        return (rows.T @ sp.diags_array(w, dtype=np.int64) @ rows).tocsr()

    @classmethod
    def build(
        cls, config: CooccurrenceConfig, rows: sp.csr_matrix, n_users: int | None = None
    ) -> CooccurrenceModel:
        """Statistics counted from scratch over ``rows`` (one binary row per user)."""
        dtype = cls.count_dtype(config, n_users or rows.shape[0])
        n = rows.shape[1]
        counts = np.zeros((n, n), dtype)
        gram = cls(config, counts, np.zeros(n, np.int64), checksum=0)._gram(rows).tocoo()
        counts[gram.row, gram.col] = gram.data.astype(dtype)
        degree = np.asarray(rows.sum(axis=0)).ravel().astype(np.int64)
        return cls(config, counts, degree)

    def update(
        self, old_rows: sp.csr_matrix, new_rows: sp.csr_matrix
    ) -> tuple[np.ndarray, np.ndarray]:
        """Replace the blocks of some users (``old_rows`` -> ``new_rows``, same row order).

        Returns the ``(rows, cols)`` of the count entries that changed.
        """
        delta = (self._gram(new_rows) - self._gram(old_rows)).tocoo()
        nz = delta.data != 0
        r, c, v = delta.row[nz], delta.col[nz], delta.data[nz]
        self.counts[r, c] += v.astype(self.counts.dtype)
        with np.errstate(over="ignore"):
            h = entry_hash(r, c, self.n_items)
            step = (v.astype(np.int64).astype(np.uint64) * h).sum(dtype=np.uint64)
            self.checksum = int(np.uint64(self.checksum) + step)
        self.degree += (
            np.asarray(new_rows.sum(axis=0)).ravel() - np.asarray(old_rows.sum(axis=0)).ravel()
        ).astype(np.int64)
        if self._counts_f is not None:
            self._counts_f[r, c] = self.counts[r, c]
        if len(r):
            self._weights = None  # the model is recomputed from the new statistics
        return r.astype(np.int64), c.astype(np.int64)

    # ------------------------------------------------------------------ scoring
    @property
    def counts_f(self) -> np.ndarray:
        """``counts`` as float64 (cached; kept in sync by :meth:`update`)."""
        if self._counts_f is None:
            self._counts_f = self.counts.astype(np.float64)
        return self._counts_f

    def _ease_weights(self) -> np.ndarray:
        """EASE item-item weights ``B`` from the current statistics (cached)."""
        if self._weights is None:
            counts = self.counts.astype(np.float64)
            trace = float(np.trace(counts))
            g = counts * (float(self.degree.sum()) / trace) if trace > 0 else counts
            g[np.diag_indices_from(g)] += self.config.l2
            # one BLAS thread: a threaded factorisation splits its reductions by thread count,
            # so the weights (and every candidate list, adapter training stream and audit hash
            # derived from them) would differ between OMP_NUM_THREADS=1 and 2
            with single_blas_thread():
                chol, info = lapack.dpotrf(g, lower=0, overwrite_a=1, clean=0)
                if info != 0:
                    raise ArithmeticError(f"EASE: Cholesky failed (info={info}); raise l2")
                inv, info = lapack.dpotri(chol, lower=0, overwrite_c=1)
            if info != 0:
                raise ArithmeticError(f"EASE: inverse failed (info={info}); raise l2")
            upper = np.triu(inv)
            p = upper + np.triu(upper, 1).T
            b = p / -np.diag(p)[None, :]
            b[np.diag_indices_from(b)] = 0.0
            self._weights = b
        return self._weights

    def scores(self, rows: sp.csr_matrix, item_vectors: np.ndarray | None = None) -> np.ndarray:
        """Scores ``[len(rows), n_items]`` (float64) for users with the given binary rows.

        ``item_vectors``: unit item embeddings (zero rows for forgotten items) for the text /
        embedding blend; skipped when ``None`` or ``text_weight == 0``.
        """
        cfg = self.config
        d = np.maximum(self.degree, 1).astype(np.float64)
        x = sp.csr_matrix(rows, dtype=np.float64)
        if cfg.model == "ease":
            s = np.asarray(x @ self._ease_weights())
            s *= d**-cfg.beta
        else:
            s = np.asarray((x @ sp.diags_array(d**-cfg.alpha)) @ self.counts_f)
            s *= d ** -(1.0 - cfg.alpha + cfg.beta)
        top = s.max(axis=1, keepdims=True) if s.size else s
        s /= np.where(top > 0, top, 1.0)
        if cfg.text_weight and item_vectors is not None:
            prof = np.asarray(x @ item_vectors)
            norm = np.linalg.norm(prof, axis=1, keepdims=True)
            prof /= np.where(norm > 0, norm, 1.0)
            s += cfg.text_weight * (prof @ item_vectors.T)
        s += POPULARITY_TIEBREAK * self.degree / max(1, int(self.degree.max(initial=0)))
        return s

    def equals(self, other: CooccurrenceModel) -> bool:
        """Bitwise equality of the statistics and configuration."""
        return (
            self.config == other.config
            and self.counts.dtype == other.counts.dtype
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.degree, other.degree)
        )


def top_n(scores: np.ndarray, n: int, blocked: sp.csr_matrix | None = None) -> np.ndarray:
    """Indices of the ``n`` best items per row, best first; ties go to the lower item index.

    ``-inf`` scores and the items in ``blocked`` (same rows as ``scores``) are never returned;
    rows with fewer rankable items are padded with ``-1``.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if blocked is not None and blocked.nnz:
        coo = blocked.tocoo()
        scores[coo.row, coo.col] = -np.inf
    b, m = scores.shape
    n = int(n)
    out = np.full((b, n), -1, dtype=np.int64)
    if n <= 0 or m == 0:
        return out
    k = min(n, m)
    thr = np.partition(scores, m - k, axis=1)[:, m - k]
    for r in range(b):
        row = scores[r]
        idx = np.flatnonzero((row >= thr[r]) & np.isfinite(row))
        idx = idx[np.argsort(-row[idx], kind="stable")][:n]
        out[r, : len(idx)] = idx
    return out
