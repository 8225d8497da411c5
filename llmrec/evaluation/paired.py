"""The one paired comparison of per-user (or per-seed) metrics used by every report."""

from __future__ import annotations

from typing import Any

import numpy as np


def paired_difference(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> dict[str, Any]:
    """Paired comparison of metrics ``a`` and ``scale * b`` (same users, same order): mean
    difference, its standard error and 95% interval, a two-sided paired t-test, a two-sided
    Wilcoxon signed-rank test (zero differences dropped first, so small samples get the exact
    distribution), and the counts of pairs where ``a`` wins, loses or ties."""
    from scipy import stats

    d = np.asarray(a, np.float64) - scale * np.asarray(b, np.float64)
    n = len(d)
    out: dict[str, Any] = {"n_users": n, "mean_diff": float(d.mean()) if n else 0.0}
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    out["std_err"] = se
    out["ci95"] = [out["mean_diff"] - 1.96 * se, out["mean_diff"] + 1.96 * se]
    nz = d[d != 0]
    out["t_p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue) if n > 1 and se > 0 else 1.0
    out["wilcoxon_p_value"] = float(stats.wilcoxon(nz).pvalue) if len(nz) else 1.0
    out["wins"], out["losses"] = int((d > 0).sum()), int((d < 0).sum())
    out["ties"] = n - out["wins"] - out["losses"]
    return out
