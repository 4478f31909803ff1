"""PNG plots of benchmark records: the accuracy / speed Pareto picture (more join with issue 4).

Reads the JSON shapes bench.py writes; never runs a model.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def pareto(result: dict, path: str) -> None:
    """Accuracy vs answer tokens/s, one point per recipe."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for r in result["runs"]:
        ax.scatter(r["answer_tokens_per_s"], 100 * r["accuracy"], s=40)
        ax.annotate(
            r["recipe"],
            (r["answer_tokens_per_s"], 100 * r["accuracy"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("answer tokens / s (higher is faster)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"{result['model']} on {result['task']} (n={result['n']}, {result['machine']})", fontsize=9
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
