"""Markdown table of one or more `unmask bench --json` files (for the README and issue notes).

python scripts/bench_md.py runs/bench/llada/baselines.json runs/bench/llada/dynamic.json
"""

from __future__ import annotations

import json
import sys


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(paths: list[str]) -> None:
    print(
        "| recipe | acc | nfe/sample | rows/AR | +V/AR | answer tok/s | x vanilla | x fast-dllm "
        "| file |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        result = json.load(open(path))
        for r in result["runs"]:
            fast = r.get("speedup_vs_fast_dllm")
            print(
                f"| `{r['recipe']}` | {100 * r['accuracy']:.1f}% | {r['nfe_per_sample']:.1f} "
                f"| {r['rows_over_ar_floor']:.2f} "
                f"| {r.get('cost_over_ar_floor', float('nan')):.2f} "
                f"| {r['answer_tokens_per_s']:.0f} "
                f"| {_x(r['speedup_vs_vanilla'])} | {_x(fast)} "
                f"| {path.rsplit('/', 1)[-1]} (n={result['n']}) |"
            )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
