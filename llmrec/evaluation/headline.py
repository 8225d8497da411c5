"""The report's conclusion, written from a scenario's numbers (never by hand).

One paragraph per scenario names: the method closest to its own gold, the fastest exact
method, the methods flagged for propagation bias with the direction of their bias, the methods
whose forgotten users keep utility or whose membership-inference AUC stays above
:data:`MIA_LIMIT`, and the methods skipped with their reason.
"""

from __future__ import annotations

import math

#: a membership-inference AUC above this says the forgotten pairs are still told apart
MIA_LIMIT = 0.6
#: forgotten users "keep utility" when their NDCG@10 on their own test pairs exceeds retrain's
#: (the exact gold) by more than this
KEPT_UTILITY_MARGIN = 0.05


def _mean(agg: dict, m: str, col: str) -> float:
    return agg[m][col]["mean"] if agg[m][col]["n"] else float("nan")


def _exact(seeds: list[dict], m: str) -> bool | None:
    """The method's exactness over all seeds: verified (the LLM path's rebuild) or declared (an
    embedding unlearner's class); ``None``: unknown, e.g. the LLM path without its rebuild."""
    vals = []
    for s in seeds:
        e = s["methods"][m]
        v = e.get("completeness", {}).get("exact")
        vals.append(e.get("info", {}).get("declared_exact") if v is None else v)
    if any(v is None for v in vals):
        return None
    return all(vals)


def _seconds(x: float) -> str:
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def _closest(agg: dict, seeds: list[dict]) -> str:
    dist = {}
    for m in agg:
        d = [_mean(agg, m, c) for c in ("D_neigh", "D_ctrl")]
        if not any(math.isnan(x) for x in d):
            dist[m] = sum(d) / 2
    if not dist:
        return "No method was judged against a gold (no forgotten user had neighbours)."
    exact = [m for m in dist if _exact(seeds, m)]
    approx = {m: d for m, d in dist.items() if m not in exact}
    if approx:
        best = min(approx, key=approx.get)
        text = (
            f"Closest to its own gold among the approximate methods: {best} (mean top-10 "
            f"divergence {approx[best]:.3f} from it on neighbours and controls; 0 is the gold "
            "itself)"
        )
        if exact:
            verb = "equals its" if len(exact) == 1 else "equal their"
            text += f"; {', '.join(exact)} {verb} gold (exact)"
        return text + "."
    rows = ", ".join(f"{m} {d:.3f}" for m, d in sorted(dist.items(), key=lambda kv: kv[1]))
    return f"Every method is exact; mean top-10 divergence from its own gold: {rows}."


def _fastest_exact(agg: dict, seeds: list[dict]) -> str:
    exact = {m: _mean(agg, m, "forget_s") for m in agg if _exact(seeds, m)}
    exact = {m: s for m, s in exact.items() if not math.isnan(s)}
    if not exact:
        return "No exact method ran."
    best = min(exact, key=exact.get)
    others = ", ".join(f"{m} {_seconds(s)}" for m, s in exact.items() if m != best)
    return f"Fastest exact method: {best}, {_seconds(exact[best])} of forget cost" + (
        f" ({others})." if others else "."
    )


def _direction(agg: dict, m: str) -> str:
    """Which way a flagged method's neighbours differ from its controls, in words."""
    parts = []
    dn = _mean(agg, m, "excess_dNDCG")
    if not math.isnan(dn) and dn != 0:
        if dn < 0:
            parts.append(
                f"excess ΔNDCG@10 {dn:+.4f} < 0: the forgotten users' neighbours lose more "
                "NDCG@10 against the gold than the controls do (damage concentrated near the "
                "forgotten users)"
            )
        else:
            parts.append(
                f"excess ΔNDCG@10 {dn:+.4f} > 0: the neighbours keep more NDCG@10 than the gold "
                "gives them (the forgotten data still helps similar users)"
            )
    dd = _mean(agg, m, "excess_D")
    if not math.isnan(dd) and dd != 0:
        side = "further from" if dd > 0 else "closer to"
        parts.append(f"excess divergence {dd:+.4f}: their top-10 lies {side} the gold's")
    return "; ".join(parts) or "neighbours and controls differ in distribution only"


def _flagged(agg: dict, flags: dict) -> str:
    biased = [m for m in agg if flags.get(m, {}).get("biased")]
    if not biased:
        return (
            "No method is flagged for propagation bias (its forgotten users' neighbours and "
            "random controls move alike against its gold)."
        )
    rows = []
    for m in biased:
        p = min(flags[m]["p_delta_ndcg"], flags[m]["p_divergence"])
        rows.append(f"{m} (p = {p:.2g}; {_direction(agg, m)})")
    return (
        "Flagged for propagation bias (neighbours of the forgotten users differ from random "
        "controls; negative excess = neighbours hurt, positive = neighbours favoured): "
        + "; ".join(rows)
        + "."
    )


def _not_forgotten(agg: dict, seeds: list[dict]) -> str:
    gold = _mean(agg, "retrain", "ndcg@10_forget") if "retrain" in agg else float("nan")
    rows, exact_auc = [], []
    for m in agg:
        if _exact(seeds, m):  # equal to its gold: what it still tells apart, retraining does too
            auc = _mean(agg, m, "mia_auc")
            if auc > MIA_LIMIT:
                exact_auc.append(f"{m} {auc:.3f}")
            continue
        why = []
        f = _mean(agg, m, "ndcg@10_forget")
        if m != "retrain" and not math.isnan(gold) and f > gold + KEPT_UTILITY_MARGIN:
            why.append(
                f"its forgotten users keep NDCG@10 {f:.3f} on their own test pairs (retrain "
                f"{gold:.3f})"
            )
        auc = _mean(agg, m, "mia_auc")
        if auc > MIA_LIMIT:
            why.append(f"membership AUC {auc:.3f} > {MIA_LIMIT}")
        if why:
            rows.append(f"{m}: " + " and ".join(why))
    note = (
        f" (exact methods above {MIA_LIMIT}, {', '.join(exact_auc)}: the attack also tells "
        "apart pairs that retraining from scratch predicts from the rest of the data)"
        if exact_auc
        else ""
    )
    if not rows:
        return (
            f"Every approximate method forgets: no forgotten users keep more than "
            f"{KEPT_UTILITY_MARGIN} NDCG@10 over retrain's, no membership AUC is above "
            f"{MIA_LIMIT}{note}."
        )
    return "Fails to forget: " + "; ".join(rows) + note + "."


def headline(spec: str, agg: dict, flags: dict, seeds: list[dict], skipped: dict) -> str:
    """One paragraph of conclusions for scenario ``spec`` from its aggregate (``agg``), bias
    flags, per-seed results and the methods skipped (``{method: reason}``)."""
    n = len(seeds)
    parts = [
        f"Scenario {spec} ({n} seed{'s' if n != 1 else ''}):",
        _closest(agg, seeds),
        _fastest_exact(agg, seeds),
        _flagged(agg, flags),
        _not_forgotten(agg, seeds),
    ]
    if skipped:
        parts.append("Skipped: " + "; ".join(f"{m} ({why})" for m, why in skipped.items()) + ".")
    return " ".join(parts)
