"""Comparison outputs: aggregated table, significance tests, CSV/Markdown, PNG plots, HTML report.

Input is the list of per-seed results of :func:`llmrec.experiments.compare.run_seed`.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np

from llmrec.evaluation.headline import headline
from llmrec.evaluation.paired import paired_difference

# (column name, path into a method's per-seed entry)
COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("forget_s", ("seconds",)),
    ("serve_s", ("serving_seconds",)),
    ("wall_s", ("wall_seconds",)),
    ("speedup", ("speedup_vs_retrain",)),
    ("peak_mb", ("peak_memory_mb",)),
    ("ndcg@10_all", ("utility", "all", "ndcg@10")),
    ("recall@10_all", ("utility", "all", "recall@10")),
    ("ndcg@10_forget", ("utility", "forget", "ndcg@10")),
    ("ndcg@10_neigh", ("utility", "neighbours", "ndcg@10")),
    ("ndcg@10_ctrl", ("utility", "controls", "ndcg@10")),
    ("dNDCG_neigh", ("bias", "vs_gold", "neighbours", "delta_ndcg")),
    ("dNDCG_ctrl", ("bias", "vs_gold", "controls", "delta_ndcg")),
    ("excess_dNDCG", ("bias", "vs_gold", "excess", "delta_ndcg")),
    ("D_neigh", ("bias", "vs_gold", "neighbours", "divergence")),
    ("D_ctrl", ("bias", "vs_gold", "controls", "divergence")),
    ("excess_D", ("bias", "vs_gold", "excess", "divergence")),
    ("excess_dNDCG_vs_orig", ("bias", "vs_original", "excess", "delta_ndcg")),
    ("excess_D_vs_orig", ("bias", "vs_original", "excess", "divergence")),
    ("D_collateral_vs_orig", ("collateral", "divergence")),
    ("dNDCG_collateral_vs_orig", ("collateral", "delta_ndcg")),
    ("A-IGF", ("fairness", "a_igf", "value")),
    ("shardGF", ("fairness", "shard_gf", "value")),
    ("forgotten_rank_median", ("completeness", "forgotten_rank", "median_rank")),
    ("mia_auc", ("completeness", "mia_auc")),
]


def _get(d: dict, path: tuple[str, ...]):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return float("nan")
        d = d[p]
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else float("nan")


def methods_of(seeds: list[dict]) -> list[str]:
    return [m for m in seeds[0]["methods"] if not m.startswith("_")]


def aggregate(seeds: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {column: {"mean", "std", "n"}}}`` over seeds (NaNs ignored)."""
    out: dict = {}
    for m in methods_of(seeds):
        out[m] = {}
        for col, path in COLUMNS:
            vals = np.array([_get(s["methods"][m], path) for s in seeds], dtype=float)
            vals = vals[~np.isnan(vals)]
            out[m][col] = {
                "mean": float(vals.mean()) if len(vals) else float("nan"),
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "n": int(len(vals)),
            }
    return out


def _neighbour_deltas(method: dict) -> dict | None:
    """A method's per-user ΔNDCG of the neighbours against the gold (``users``, ``delta_ndcg``)."""
    return method.get("bias", {}).get("vs_gold", {}).get("per_user", {}).get("neighbours")


def significance(seeds: list[dict]) -> list[dict]:
    """Paired tests between every two methods on neighbours' per-user ΔNDCG vs gold.

    Users are paired within a seed (same user, same request, two methods) and pooled over seeds;
    the test is Wilcoxon's signed-rank (two-sided). With ≥ 2 seeds a paired t-test on the
    per-seed excess ΔNDCG is added. Both from :func:`llmrec.evaluation.paired.paired_difference`.
    """
    rows = []
    for a, b in combinations(methods_of(seeds), 2):
        da, db = [], []
        for s in seeds:
            ba, bb = (_neighbour_deltas(s["methods"][m]) for m in (a, b))
            if not ba or not bb:
                continue
            ua, ub = np.asarray(ba["users"]), np.asarray(bb["users"])
            common, ia, ib = np.intersect1d(ua, ub, return_indices=True)
            da += list(np.asarray(ba["delta_ndcg"])[ia])
            db += list(np.asarray(bb["delta_ndcg"])[ib])
        if len(da) < 2:
            continue
        diff = np.asarray(da) - np.asarray(db)
        row = {"a": a, "b": b, "n_pairs": len(diff), "mean_diff": float(diff.mean())}
        row["wilcoxon_p"] = paired_difference(da, db)["wilcoxon_p_value"]
        ea = [_get(s["methods"][a], ("bias", "vs_gold", "excess", "delta_ndcg")) for s in seeds]
        eb = [_get(s["methods"][b], ("bias", "vs_gold", "excess", "delta_ndcg")) for s in seeds]
        if (
            len(seeds) >= 2
            and not any(math.isnan(x) for x in ea + eb)
            and np.any(np.subtract(ea, eb) != 0)
        ):
            row["ttest_excess_p"] = paired_difference(ea, eb)["t_p_value"]
        rows.append(row)
    return rows


def _fmt(x: float, digits: int = 4) -> str:
    return "" if math.isnan(x) else f"{x:.{digits}f}"


def _cell(stat: dict, digits: int = 4) -> str:
    if stat["n"] == 0:
        return "–"
    s = f"{stat['mean']:.{digits}f}"
    return s + (f" ± {stat['std']:.{digits}f}" if stat["n"] > 1 else "")


#: against each method's own references (gold: the same method from scratch on the retained
#: data; original: the same method before the request)
MD_BIAS_COLUMNS = [
    "dNDCG_neigh",
    "dNDCG_ctrl",
    "excess_dNDCG",
    "D_neigh",
    "D_ctrl",
    "excess_D",
    "excess_D_vs_orig",
    "D_collateral_vs_orig",
    "forgotten_rank_median",
    "mia_auc",
]
#: across families, on the same users
MD_UTILITY_COLUMNS = [
    "forget_s",
    "serve_s",
    "wall_s",
    "speedup",
    "ndcg@10_all",
    "recall@10_all",
    "ndcg@10_forget",
    "ndcg@10_neigh",
    "ndcg@10_ctrl",
    "A-IGF",
    "shardGF",
]
MD_COLUMNS = MD_UTILITY_COLUMNS + MD_BIAS_COLUMNS
SECONDS_LIKE = ("forget_s", "serve_s", "wall_s", "speedup", "forgotten_rank_median")
#: what every column of the report's tables means
COLUMN_DEFINITIONS: dict[str, str] = {
    "forget_s": "forget cost: wall seconds of the method's unlearning step alone (an embedding "
    "unlearner's update; for CRAGRU the forget stages, the touched shards' re-tuning "
    "included), without building, serving or evaluation",
    "serve_s": "serving time: wall seconds to rank every retained user once after the request "
    "and score the ranking (for CRAGRU: retrieval, prompts and the LM, with the ranking done "
    "while its blend weight is tuned on VALID)",
    "wall_s": "the method's whole run: building, the forget step, serving the reference users "
    "before the request and, for the LLM path, its gold's from-scratch rebuild",
    "speedup": "retrain's forget_s divided by the method's, in the same run",
    "peak_mb": "peak memory increase of the forget step (MB)",
    "ndcg@10_all": "NDCG@10 on TEST of every retained user (RecBole full ranking)",
    "recall@10_all": "Recall@10 on TEST of every retained user",
    "ndcg@10_forget": "NDCG@10 of the forgotten users on their original test pairs: lower is "
    "more forgotten; compare with retrain's",
    "ndcg@10_neigh": "NDCG@10 of the forgotten users' neighbours (top-k cosine of interaction "
    "rows)",
    "ndcg@10_ctrl": "NDCG@10 of as many random control users",
    "A-IGF": "CURE4Rec: NDCG@10 of the 5% most active users minus the others'",
    "shardGF": "CURE4Rec: variance of the per-shard NDCG@10 (a sharded method's own shards, "
    "else a fixed random partition into 10)",
    "dNDCG_neigh": "mean ΔNDCG@10 of the neighbours: the method's NDCG@10 minus its own gold's "
    "(negative: worse than the gold)",
    "dNDCG_ctrl": "the same for the controls",
    "excess_dNDCG": "dNDCG_neigh − dNDCG_ctrl: negative = the neighbours lose more than the "
    "controls (damage near the forgotten users), positive = the neighbours keep more than the "
    "gold gives them (the forgotten data still helps them)",
    "D_neigh": "mean top-10 divergence of the neighbours from the gold's top-10 (share of the "
    "10 items not in the gold's; 0 = identical)",
    "D_ctrl": "the same for the controls",
    "excess_D": "D_neigh − D_ctrl: positive = the neighbours' lists move further from the gold "
    "than the controls'",
    "excess_dNDCG_vs_orig": "excess ΔNDCG@10 against the method's own original (before the "
    "request) instead of its gold",
    "excess_D_vs_orig": "excess divergence against the method's own original",
    "D_collateral_vs_orig": "mean top-10 divergence from the method's own original on the "
    "reference users it re-fitted (a sharded method's shard-mates): the re-fit's collateral",
    "dNDCG_collateral_vs_orig": "the same as ΔNDCG@10",
    "forgotten_rank_median": "median rank of the forgotten (user, item) pairs among all items "
    "after the request: higher is more forgotten",
    "mia_auc": "membership-inference AUC on the forgotten pairs against never-seen pairs: 0.5 "
    "= indistinguishable (forgotten), above 0.6 = still told apart",
    "biased (p)": "whether the neighbours and controls differ against the method's own gold "
    "(two-sided Mann-Whitney U on ΔNDCG@10 and on divergence, Bonferroni, α = 0.05; the "
    "smaller p shown); the sign of excess_dNDCG / excess_D gives the direction",
}


def column_definitions(columns: list[str]) -> list[str]:
    """Markdown lines defining ``columns``."""
    return [f"{c}: {COLUMN_DEFINITIONS[c]}." for c in columns if c in COLUMN_DEFINITIONS]


#: a method is flagged as biased when neighbours and controls differ at this level
#: (two-sided Mann-Whitney U on per-user ΔNDCG and on divergence vs its own gold, Bonferroni)
BIAS_ALPHA = 0.05


def bias_flags(seeds: list[dict]) -> dict[str, dict]:
    """Per method: do its neighbours' per-user ΔNDCG / divergence against its *own* gold differ
    from its controls'? (pooled over seeds; a method equal to its gold is never flagged)."""
    from scipy import stats

    out = {}
    for m in methods_of(seeds):
        groups = {"neighbours": {"delta_ndcg": [], "divergence": []}}
        groups["controls"] = {"delta_ndcg": [], "divergence": []}
        for s in seeds:
            pu = s["methods"][m].get("bias", {}).get("vs_gold", {}).get("per_user")
            for g in groups if pu else ():
                for key in groups[g]:
                    groups[g][key] += list(pu[g][key])
        if not groups["neighbours"]["divergence"] or not groups["controls"]["divergence"]:
            continue
        ps = {}
        for key in ("delta_ndcg", "divergence"):
            a, b = np.asarray(groups["neighbours"][key]), np.asarray(groups["controls"][key])
            same = np.all(a == a[0]) and np.all(b == a[0])
            ps[key] = 1.0 if same else float(stats.mannwhitneyu(a, b).pvalue)
        p = min(ps.values())
        out[m] = {**{f"p_{k}": v for k, v in ps.items()}, "biased": p < BIAS_ALPHA / len(ps)}
    return out


def _table(agg: dict, columns: list[str], flags: dict | None = None) -> list[str]:
    head = columns + (["biased (p)"] if flags is not None else [])
    lines = ["| method | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for m, cols in agg.items():
        cells = [_cell(cols[c], 2 if c in SECONDS_LIKE else 4) for c in columns]
        if flags is not None:
            f = flags.get(m)
            cells.append(
                "–"
                if f is None
                else f"{'yes' if f['biased'] else 'no'} ({min(f['p_delta_ndcg'], f['p_divergence']):.3g})"
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(
    agg: dict,
    sig: list[dict],
    title: str,
    seeds: list[dict] | None = None,
    skipped: dict | None = None,
) -> str:
    lines = [f"# {title}", ""]
    for m, why in (skipped or {}).items():
        lines += [f"Skipped: {m}: {why}.", ""]
    checks = [s.get("retrain_check") for s in seeds or [] if s.get("retrain_check")]
    for c in checks:
        if not c["ok"]:
            lines += [f"WARNING: {c['warning']}", ""]
    if checks:
        c = checks[0]
        lines += [
            f"Retrain check: VALID NDCG@10 of retrain {c['retrain_valid_ndcg@10']:.4f} vs original "
            f"{c['original_valid_ndcg@10']:.4f} on {c['n_users']} retained users (tolerance "
            f"{c['tolerance']:.0%}): {'ok' if all(x['ok'] for x in checks) else 'FAILED'}.",
            "",
        ]
    lines += ["## Utility on the same users, across families", ""]
    lines += _table(agg, MD_UTILITY_COLUMNS)
    lines += [
        "",
        "A-IGF: NDCG@10 of the 5% most active users minus the others; shardGF: variance of the "
        "per-shard NDCG@10 (own shards of a sharded method, else a fixed random partition) "
        "(CURE4Rec).",
        "",
        "## Propagation bias, each method against its own references",
        "",
    ]
    flags = bias_flags(seeds) if seeds else {}
    lines += _table(agg, MD_BIAS_COLUMNS, flags)
    lines += [
        "",
        "ΔNDCG and D (top-10 divergence) are against the method's own gold; excess = neighbours − "
        "controls (damage on users similar to the forgotten beyond global drift); collateral: "
        "divergence from the method's own original on the reference users it re-fitted (the "
        "shard-mates for a sharded method).",
    ]
    if "cragru" in agg and "cragru-zeroshot" in agg:
        a, z = agg["cragru"], agg["cragru-zeroshot"]
        gain = a["ndcg@10_all"]["mean"] - z["ndcg@10_all"]["mean"]
        lines += [
            "",
            f"LLM path, adapters vs zero-shot: utility gain of the adapters (NDCG@10, all users) "
            f"{gain:+.4f}; collateral top-10 divergence from its own original on the re-tuned "
            f"shards' users {_cell(a['D_collateral_vs_orig'])} (zero-shot, nothing to re-tune: "
            f"{_cell(z['D_collateral_vs_orig'])}).",
        ]
    lines += _gain_lines(seeds or [])
    refs = {m: e.get("references") for m, e in (seeds or [{}])[0].get("methods", {}).items()}
    refs = {m: r for m, r in refs.items() if r and not m.startswith("_")}
    if refs:
        lines += ["", "| method | gold | original |", "|---|---|---|"]
        lines += [f"| {m} | {r['gold']} | {r['original']} |" for m, r in refs.items()]
    if sig:
        lines += [
            "",
            "## Paired tests (neighbours' per-user ΔNDCG vs each method's own gold)",
            "",
            "| a | b | pairs | mean(a−b) | Wilcoxon p | t-test p (excess, seeds) |",
            "|---|---|---|---|---|---|",
        ]
        for r in sig:
            t = r.get("ttest_excess_p")
            lines.append(
                f"| {r['a']} | {r['b']} | {r['n_pairs']} | {r['mean_diff']:.4f} | {r['wilcoxon_p']:.3g} | {'' if t is None else f'{t:.3g}'} |"
            )
    return "\n".join(lines) + "\n"


def _gain_lines(seeds: list[dict]) -> list[str]:
    """What the LLM path adds over its own candidate order (method ``candidates``), paired per
    user, one line per LLM method and seed."""
    rows = [
        (m, s.get("seed"), e["gain_over_candidates"])
        for s in seeds
        for m, e in s.get("methods", {}).items()
        if "gain_over_candidates" in e
    ]
    if not rows:
        return []
    out = [
        "",
        "What the LLM adds over its candidate generator's own order (method `candidates`), "
        "paired per user on the same retained users:",
        "",
    ]
    for m, seed, g in rows:
        out.append(
            f"- {m} (seed {seed}): {g['metric'].upper()} {g['mean_diff']:+.4f} "
            f"± {g['std_err']:.4f} (s.e., {g['n_users']} users; paired t p={g['t_p_value']:.3g}, "
            f"Wilcoxon p={g['wilcoxon_p_value']:.3g}; wins/losses/ties "
            f"{g['wins']}/{g['losses']}/{g['ties']})"
        )
    return out


# ------------------------------------------------------------------ plots


def plot_bias(agg: dict, path: Path, seeds: list[dict]) -> None:
    """Bars: mean over seeds; error bars: std over seeds, or the per-user standard error with
    a single seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in agg if agg[m]["dNDCG_neigh"]["n"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(methods))
    for ax, (a, b, label) in zip(
        axes,
        [
            ("dNDCG_neigh", "dNDCG_ctrl", "mean ΔNDCG@10 vs own gold"),
            ("D_neigh", "D_ctrl", "mean top-10 divergence vs own gold"),
        ],
    ):
        for off, key, name in ((-0.2, a, "neighbours"), (0.2, b, "controls")):
            ax.bar(
                x + off,
                [agg[m][key]["mean"] for m in methods],
                0.4,
                yerr=[agg[m][key]["std"] for m in methods],
                capsize=3,
                label=name,
            )
        ax.set_xticks(x, methods, rotation=20)
        ax.set_title(label)
        ax.axhline(0, color="black", lw=0.6)
        ax.legend()
    fig.suptitle("Propagation bias: neighbours vs controls")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_utility_speed(agg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for m, cols in agg.items():
        sx, sy = cols["speedup"]["mean"], cols["ndcg@10_all"]["mean"]
        if math.isnan(sx) or math.isnan(sy):
            continue
        ax.errorbar(sx, sy, yerr=cols["ndcg@10_all"]["std"], fmt="o", capsize=3)
        ax.annotate(m, (sx, sy), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over retraining (same run, log)")
    ax.set_ylabel("NDCG@10, retained users")
    ax.set_title("Utility vs speed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_delta_distribution(seeds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in methods_of(seeds) if any("bias" in s["methods"][m] for s in seeds)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(methods)), 4.2))
    data, pos, colors = [], [], []
    for k, m in enumerate(methods):
        for off, grp, col in ((-0.2, "neighbours", "tab:red"), (0.2, "controls", "tab:blue")):
            vals = []
            for s in seeds:
                pu = s["methods"][m].get("bias", {}).get("vs_gold", {}).get("per_user", {}).get(grp)
                if pu:
                    vals += pu["delta_ndcg"]
            data.append(vals or [0.0])
            pos.append(k + off)
            colors.append(col)
    parts = ax.violinplot(data, positions=pos, widths=0.35, showmedians=True)
    for body, col in zip(parts["bodies"], colors):
        body.set_facecolor(col)
        body.set_alpha(0.5)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("per-user ΔNDCG@10 vs own gold")
    ax.set_title("Per-user ΔNDCG@10: neighbours (red), controls (blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------ HTML


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _md_table_to_html(md: str) -> str:
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append(
                "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"
            )
        else:
            if in_table:
                out.append("</table>")
                in_table = False
            if line.startswith("## "):
                out.append(f"<h2>{html.escape(line[3:])}</h2>")
            elif line.startswith("# "):
                out.append(f"<h1>{html.escape(line[2:])}</h1>")
            elif line.strip():
                out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def write_html(
    path: Path,
    md: str,
    images: list[Path],
    config: dict,
    extra: dict | None = None,
    captions: dict | None = None,
) -> None:
    """The self-contained report page; ``captions``: what each image shows (by path)."""
    body = _md_table_to_html(md)
    captions = captions or {}
    figs = "\n".join(
        f"<figure>{_img(p)}<figcaption>"
        f"{html.escape(captions.get(p, p.stem.replace('_', ' ')))}</figcaption></figure>"
        for p in images
    )
    cfg = html.escape(json.dumps(config, indent=2, default=str))
    ext = (
        ""
        if not extra
        else f"<h2>Details</h2><pre>{html.escape(json.dumps(extra, indent=2, default=str))}</pre>"
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>llmrec comparison report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}img{{max-width:100%}}
pre{{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}}figure{{margin:1em 0}}</style></head>
<body>
<script>
// marks how many figures decoded, for headless checks; the page loads nothing from the network
window.addEventListener("load", () => {{
  document.body.dataset.imagesLoaded = [...document.images].filter((i) => i.complete && i.naturalWidth > 0).length;
}});
</script>
{body}
<h2>Figures</h2>
{figs}
{ext}
<h2>Resolved configuration</h2>
<pre id="config">{cfg}</pre>
</body></html>
"""
    path.write_text(page, encoding="utf-8")


def _slug(spec: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in spec).strip("_")


def write_report(by_scenario: dict[str, list[dict]], run_dir: Path, config: dict) -> dict:
    """Write results.json, results.csv, results.md, PNGs per scenario and one report.html."""
    run_dir = Path(run_dir)
    sections, images, results, leak_all = [], [], {"config": config, "scenarios": {}}, {}
    csv_rows, headlines, captions = [], [], {}
    skipped = config.get("skipped", {})
    for spec, seeds in by_scenario.items():
        if seeds and seeds[0].get("stream"):
            from llmrec.evaluation.stream_report import stream_section, stream_table

            md_s, imgs = stream_section(seeds, run_dir, spec, _slug(spec))
            sections.append(md_s)
            images += imgs
            for img in imgs:
                captions[img] = (
                    f"{spec}: cumulative forget seconds of each method after each request of "
                    "the stream (lower: cheaper to keep forgetting)."
                )
            results["scenarios"][spec] = {"stream": stream_table(seeds), "seeds": seeds}
            continue
        agg = aggregate(seeds)
        sig = significance(seeds)
        flags = bias_flags(seeds)
        skip = skipped.get(spec, {})
        headlines.append(headline(spec, agg, flags, seeds, skip))
        sections.append(markdown(agg, sig, f"Scenario {spec}", seeds, skip))
        results["scenarios"][spec] = {
            "headline": headlines[-1],
            "skipped": skip,
            "aggregate": agg,
            "significance": sig,
            "bias_flags": flags,
            "seeds": seeds,
        }
        slug = _slug(spec)
        if any(agg[m]["dNDCG_neigh"]["n"] for m in agg):
            plot_bias(agg, run_dir / f"{slug}_propagation_bias.png", seeds)
            plot_delta_distribution(seeds, run_dir / f"{slug}_delta_ndcg_distribution.png")
            images += [
                run_dir / f"{slug}_propagation_bias.png",
                run_dir / f"{slug}_delta_ndcg_distribution.png",
            ]
            captions[images[-2]] = (
                f"{spec}: propagation bias. Left, mean ΔNDCG@10 of each method against its own "
                "gold for the forgotten users' neighbours and for random controls (below zero: "
                "worse than the gold); right, their mean top-10 divergence from the gold. A "
                "neighbour bar apart from its control bar is damage (or favour) concentrated "
                "near the forgotten users. Error bars: std over seeds, or the per-user standard "
                "error with one seed."
            )
            captions[images[-1]] = (
                f"{spec}: distribution of the per-user ΔNDCG@10 against each method's own gold, "
                "neighbours (red) beside controls (blue); a method equal to its gold is a line "
                "at zero."
            )
        if any(not math.isnan(agg[m]["speedup"]["mean"]) for m in agg):
            plot_utility_speed(agg, run_dir / f"{slug}_utility_vs_speedup.png")
            images.append(run_dir / f"{slug}_utility_vs_speedup.png")
            captions[images[-1]] = (
                f"{spec}: utility against speed. NDCG@10 of every retained user (up: better) "
                "against the speed-up of the forget step over retraining in the same run (right: "
                "faster, log scale); retrain sits at 1."
            )
        for s in seeds:
            for m in methods_of(seeds):
                csv_rows.append(
                    [spec, m, s["seed"], *[_fmt(_get(s["methods"][m], p)) for _, p in COLUMNS]]
                )
            leak = {
                m: e["attribute_leakage"]
                for m, e in s["methods"].items()
                if "attribute_leakage" in e
            }
            if leak:
                leak_all[f"{spec} seed {s['seed']}"] = leak
                sections.append(
                    leakage_markdown(leak, f"Attribute leakage, {spec}, seed {s['seed']}")
                )
    md = "\n".join(sections)
    if headlines:
        scope = scope_line(config, by_scenario)
        md = "# Conclusion\n\n" + "\n\n".join([*headlines, *scope]) + "\n\n" + md
        md += (
            "\n## What the columns mean\n\n"
            + "\n".join(column_definitions([*MD_COLUMNS, "biased (p)"]))
            + "\n"
        )
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=_json_default))
    with open(run_dir / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scenario", "method", "seed", *[c for c, _ in COLUMNS]])
        w.writerows(csv_rows)
    (run_dir / "results.md").write_text(md)
    write_html(run_dir / "report.html", md, images, config, captions=captions)
    return {
        "results": str(run_dir / "results.json"),
        "report": str(run_dir / "report.html"),
        "images": [str(p) for p in images],
    }


def scope_line(config: dict, by_scenario: dict[str, list[dict]]) -> list[str]:
    """What the run scored and served with when it is not the default: the evaluated user
    sample (``--eval-users``) and the LLM path's base model (``--llm-base``)."""
    parts = []
    samples = {
        (s["evaluated_sample"]["users"], s["evaluated_sample"]["of"])
        for seeds in by_scenario.values()
        for s in seeds
        if s.get("evaluated_sample")
    }
    if samples:
        shown = ", ".join(f"{n} of {of}" for n, of in sorted(samples))
        parts.append(
            f"Every method was scored on the same seeded sample of users ({shown} retained "
            "users; `--eval-users`), not on all of them."
        )
    if config.get("llm_base"):
        parts.append(f"The LLM path's base model: {config['llm_base']} (`--llm-base`).")
    return [" ".join(parts)] if parts else []


def leakage_markdown(leak: dict, title: str) -> str:
    """Balanced accuracy / macro-F1 / AUC of each attacker, per method and attribute."""
    lines = [
        f"## {title}",
        "",
        "| method | attribute | attacker | balanced acc | chance | macro-F1 | AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, per_attr in leak.items():
        for attr, entry in per_attr.items():
            for att, r in entry.items():
                if not isinstance(r, dict) or "balanced_accuracy" not in r:
                    continue
                lines.append(
                    f"| {m} | {attr} | {att} | {r['balanced_accuracy']:.4f} | {r.get('chance', float('nan')):.4f} | "
                    f"{r.get('macro_f1', float('nan')):.4f} | {r.get('auc', float('nan')):.4f} |"
                )
    return "\n".join(lines) + "\n"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dict__"):
        return o.__dict__
    return str(o)
