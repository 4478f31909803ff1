"""Side-by-side speed of two source trees (e.g. a worktree of the previous commit and this one):
the same bench (same model, task, samples, recipes) run alternately A, B, A, B, ... in fresh
processes, one thread each; prints answer tokens/s per round and the median B/A ratio.

    git worktree add /tmp/base HEAD~1
    python scripts/speed_ab.py /tmp/base . --recipes fast-dllm --n 50 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def bench(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, "-m", "unmask.cli", "bench", "--model", args.model, "--task", args.task]
    cmd += ["--n", str(args.n), "--recipes", args.recipes]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    runs = json.loads(out.stdout.strip().splitlines()[-1])["runs"]
    return {r["recipe"]: r["answer_tokens_per_s"] for r in runs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="the reference tree")
    p.add_argument("b", type=Path, help="the tree measured against it")
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--task", default="arith")
    p.add_argument("--recipes", default="fast-dllm")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    ratios: dict[str, list[float]] = {}
    for k in range(args.rounds):
        a, b = bench(args.a.resolve(), args), bench(args.b.resolve(), args)
        for name in a:
            ratios.setdefault(name, []).append(b[name] / a[name])
            print(
                f"round {k + 1} {name}: A {a[name]:.1f}  B {b[name]:.1f} answer tok/s  "
                f"B/A {b[name] / a[name]:.3f}",
                flush=True,
            )
    for name, r in ratios.items():
        print(f"{name}: median B/A {statistics.median(r):.3f} over {len(r)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
