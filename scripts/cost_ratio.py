"""Does a step's cost follow its rows? From a bench JSON: each recipe's wall-time ratio to
vanilla divided by its rows ratio to vanilla (1.0: time exactly proportional to the rows
computed; above 1: overhead the rows do not explain).

    unmask bench --model /tmp/llada-52m --n 4 --recipes vanilla,fast-dllm,dllm-cache,dynamic-dllm \\
        --json /tmp/b.json && python scripts/cost_ratio.py /tmp/b.json
"""

import json
import sys


def main(path: str) -> None:
    runs = {r["recipe"]: r for r in json.load(open(path))["runs"]}
    base = runs["vanilla"]
    print(f"{'recipe':14s} {'nfe':>6s} {'wall/van':>9s} {'rows/van':>9s} {'ratio':>6s}")
    for name, r in runs.items():
        wall = r["wall_s"] / base["wall_s"]
        rows = r["rows_per_sample"] / base["rows_per_sample"]
        print(f"{name:14s} {r['nfe_per_sample']:6.1f} {wall:9.3f} {rows:9.3f} {wall / rows:6.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
