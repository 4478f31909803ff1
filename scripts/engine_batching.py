"""What batching can gain on this machine: serve_load's 64 mixed requests (vanilla, fast-dllm,
cadllm, dynamic-dllm; 16-64 tokens) through the Engine directly, with no HTTP, up to C rows at a
time against one at a time. Each run is profiled once more to split its time into the kernels
that do the arithmetic (matmuls and attention) and everything else, which gives the ceiling:
the time a run would take if batching removed all the rest.

    python scripts/engine_batching.py --model tiny-llada --clients 16 [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from unmask.engine import Engine
from unmask.generate import encode_prompts
from unmask.models.load import load
from unmask.recipe import parse
from unmask.tasks import get_task

RECIPES = ["vanilla", "fast-dllm", "cadllm", "dynamic-dllm"]
ARITHMETIC = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product")


def drive(lm, jobs: list, rows: int) -> int:
    """Decode every job with at most `rows` live at once (a finished row leaves, the next joins
    at the next step, as the server's scheduler does); returns the steps taken."""
    engine, queue, live, steps = Engine(lm), list(jobs), [], 0
    while queue or live:
        for r in [r for r in live if r.finished]:
            engine.drop(r)
            live.remove(r)
        while queue and len(live) < rows:
            ids, spec, n = queue.pop(0)
            live.append(engine.add(ids, parse(spec), n, 32))
        if live:
            engine.step()
            steps += 1
    return steps


def arithmetic_s(lm, jobs: list, rows: int) -> float:
    """Seconds the matmul and attention kernels take in one run (torch.profiler, self time)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        drive(lm, jobs, rows)
    events = prof.key_averages()
    return sum(e.self_cpu_time_total for e in events if e.key.startswith(ARITHMETIC)) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    lm = load(a.model)
    prompts = [s.prompt for s in get_task("arith", shots=0).samples("test", a.n)]
    ids = encode_prompts(lm, prompts, chat=True)
    jobs = [(ids[i], RECIPES[i % 4], (16, 32, 48, 64)[i // 4 % 4]) for i in range(a.n)]
    drive(lm, jobs[:8], a.clients)  # warm-up
    walls: dict[int, list[float]] = {a.clients: [], 1: []}
    steps = {}
    for _ in range(a.rounds):  # alternating, best of the rounds
        for rows in walls:
            t = time.perf_counter()
            steps[rows] = drive(lm, jobs, rows)
            walls[rows].append(time.perf_counter() - t)
    best = {rows: min(w) for rows, w in walls.items()}
    arith = {rows: arithmetic_s(lm, jobs, rows) for rows in walls}
    mix = ", ".join(RECIPES)
    print(f"{a.n} requests ({mix}; 16-64 tokens), {a.threads} thread(s), engine only")
    for rows in walls:
        print(
            f"  up to {rows:2d} rows: {best[rows]:6.2f} s (best of {a.rounds}), {steps[rows]:4d} "
            f"steps, matmuls + attention {arith[rows]:5.2f} s (profiled)"
        )
    one, many = best[1], best[a.clients]
    print(f"  batching gains {one / many:.2f}x; with nothing but the arithmetic left the batched")
    print(f"  run would take {arith[a.clients]:.2f} s: at most {one / arith[a.clients]:.2f}x")


if __name__ == "__main__":
    main()
