"""Merge the bench JSONs of one run split by hand over processes (the same recipes, in the same
order, on consecutive slices) into the JSON one process would have written: every figure is
recomputed from the parts' totals, and the speedups from the merged token rates.

    python scripts/merge_bench.py OUT.json A.json B.json ...
"""

from __future__ import annotations

import json
import sys

from unmask.bench import REFERENCES


def merge_runs(rows: list[dict]) -> dict:
    """One recipe's summary over its parts: bench.summarize's figures, from the parts' totals."""
    n = sum(r["n"] for r in rows)

    def total(key: str) -> float:  # the sum over every sample of a per-sample mean
        return sum(r[key] * r["n"] for r in rows)

    def per_nfe(key: str) -> float:  # a figure per forward, from its per-sample sum
        return sum(r[key] * r["nfe_per_sample"] * r["n"] for r in rows) / max(
            1, total("nfe_per_sample")
        )

    def per_floor(key: str) -> float:  # a cost over the AR floor, from the floor's sum
        floors = [r["rows_per_sample"] * r["n"] / r["rows_over_ar_floor"] for r in rows]
        return sum(r[key] * f for r, f in zip(rows, floors, strict=True)) / sum(floors)

    def per_s(key: str) -> float:  # a token rate, over the summed decode time
        return sum(r[key] * r["wall_s"] for r in rows) / sum(r["wall_s"] for r in rows)

    run = {**rows[0], "n": n}
    for key, value in rows[0].items():
        if key in ("positions_per_nfe", "answer_tokens_per_nfe"):
            run[key] = per_nfe(key)
        elif key in ("rows_over_ar_floor", "cost_over_ar_floor"):
            run[key] = per_floor(key)
        elif key.endswith("_per_s"):
            run[key] = per_s(key)
        elif key == "wall_s":
            run[key] = sum(r[key] for r in rows)
        elif isinstance(value, (int, float)) and key != "n" and not key.startswith("speedup_"):
            run[key] = total(key) / n  # accuracy, per-sample means, a task's other rates
    return run


def merge(parts: list[dict]) -> dict:
    recipes = [r["recipe"] for r in parts[0]["runs"]]
    if any([r["recipe"] for r in p["runs"]] != recipes for p in parts):
        raise SystemExit("merge_bench: the parts do not hold the same recipes in the same order")
    runs = [merge_runs([p["runs"][i] for p in parts]) for i in range(len(recipes))]
    for ref in REFERENCES:  # as bench.summaries: against the reference in the same run
        base = next((r for r in runs if r["recipe"] == ref), None)
        for r in runs:
            key = "speedup_vs_" + ref.replace("-", "_")
            r[key] = r["answer_tokens_per_s"] / base["answer_tokens_per_s"] if base else None
    n = sum(p["n"] for p in parts)
    return {**parts[0], "n": n, "start": min(p["start"] for p in parts), "runs": runs}


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit("usage: python scripts/merge_bench.py OUT.json A.json B.json ...")
    merged = merge([json.load(open(p)) for p in sys.argv[2:]])
    with open(sys.argv[1], "w") as f:
        json.dump(merged, f, indent=1)
