"""Report section of a request stream (``stream:N``): per method the cumulative seconds and the
utility after each request, a table and two line plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def stream_table(seeds: list[dict]) -> dict[str, dict[str, float]]:
    """Per method, means over seeds: total and per-request seconds, initial build, final NDCG."""
    k = seeds[0]["k"]
    out = {}
    for m in seeds[0]["methods"]:
        runs = [s["methods"][m] for s in seeds]
        per_req = [r["seconds"] for run in runs for r in run["requests"]]
        out[m] = {
            "requests": float(np.mean([len(run["requests"]) for run in runs])),
            "total_seconds": float(np.mean([run["total_seconds"] for run in runs])),
            "mean_seconds": float(np.mean(per_req)) if per_req else float("nan"),
            "initial_seconds": float(np.mean([run["initial_seconds"] for run in runs])),
            f"final_ndcg@{k}": float(np.mean([run[f"final_ndcg@{k}"] for run in runs])),
        }
    return out


def stream_markdown(seeds: list[dict], title: str) -> str:
    k = seeds[0]["k"]
    table = stream_table(seeds)
    orig = np.mean([s["original_utility"][f"ndcg@{k}"] for s in seeds])
    lines = [
        f"# {title}",
        "",
        f"{int(next(iter(table.values()))['requests'])} single-user requests, one at a time; "
        f"utility on the same {len(seeds[0]['eval_users'])} retained users after each "
        f"(original NDCG@{k} {orig:.4f}). Initial: building the sharded model / LLM path before "
        "the first request (not counted in the cumulative seconds).",
        "",
        f"| method | total seconds | seconds per request | initial seconds | final NDCG@{k} |",
        "|---|---|---|---|---|",
    ]
    for m, r in table.items():
        lines.append(
            f"| {m} | {r['total_seconds']:.2f} | {r['mean_seconds']:.3f} | "
            f"{r['initial_seconds']:.2f} | {r[f'final_ndcg@{k}']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot_stream(seeds: list[dict], path: Path) -> None:
    """Left: cumulative seconds per request (log y); right: NDCG after each request (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = seeds[0]
    k = s["k"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m, run in s["methods"].items():
        x = np.arange(1, len(run["requests"]) + 1)
        axes[0].plot(x, [r["cumulative_seconds"] for r in run["requests"]], marker=".", label=m)
        axes[1].plot(x, [r[f"ndcg@{k}"] for r in run["requests"]], marker=".", label=m)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("request")
    axes[0].set_ylabel("cumulative seconds (log)")
    axes[0].set_title("Cumulative unlearning time per request")
    axes[1].axhline(s["original_utility"][f"ndcg@{k}"], color="black", lw=0.6, ls="--")
    axes[1].set_xlabel("request")
    axes[1].set_ylabel(f"NDCG@{k}, sampled retained users")
    axes[1].set_title("Utility after each request")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stream_section(seeds: list[dict], run_dir: Path, spec: str, slug: str) -> tuple[str, list]:
    """Markdown and images of one stream scenario."""
    img = Path(run_dir) / f"{slug}_cumulative_seconds.png"
    plot_stream(seeds, img)
    return stream_markdown(seeds, f"Scenario {spec}"), [img]
