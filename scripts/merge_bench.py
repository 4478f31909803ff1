"""Merge bench JSONs of the same recipes on consecutive slices into one (accuracy and per-sample
figures weighted by n), for a run split across processes by hand:

    python scripts/merge_bench.py OUT.json A.json B.json ...
"""

from __future__ import annotations

import json
import sys


def merge(parts: list[dict]) -> dict:
    out = {**parts[0], "n": sum(p["n"] for p in parts)}
    out["start"] = min(p["start"] for p in parts)
    runs = []
    for i, first in enumerate(parts[0]["runs"]):
        rows = [p["runs"][i] for p in parts]
        if any(r["recipe"] != first["recipe"] for r in rows):
            raise SystemExit("the parts do not hold the same recipes in the same order")
        n = sum(r["n"] for r in rows)
        run = {**first, "n": n}
        for key in ("accuracy", "nfe_per_sample", "rows_per_sample", "answer_fill"):
            run[key] = sum(r[key] * r["n"] for r in rows) / n
        nfe = sum(r["nfe_per_sample"] * r["n"] for r in rows)
        run["positions_per_nfe"] = (
            sum(r["positions_per_nfe"] * r["nfe_per_sample"] * r["n"] for r in rows) / nfe
        )
        run["answer_tokens_per_nfe"] = (
            sum(r["answer_tokens_per_nfe"] * r["nfe_per_sample"] * r["n"] for r in rows) / nfe
        )
        run["wall_s"] = sum(r["wall_s"] for r in rows)
        runs.append(run)
    out["runs"] = runs
    return out


if __name__ == "__main__":
    merged = merge([json.load(open(p)) for p in sys.argv[2:]])
    with open(sys.argv[1], "w") as f:
        json.dump(merged, f, indent=1)
