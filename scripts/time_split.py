"""Where a sample's time goes under one recipe: block-start full forwards, block steps (every
other forward), and host work (everything else in the decode loop: policies, bookkeeping),
each beside its matmul floor, the weight matmuls' FLOPs at this machine's measured matmul rate.

    python scripts/time_split.py --model tiny-llada --recipe fast-dllm --n 100 [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from unmask.generate import generate
from unmask.models.load import load
from unmask.recipe import parse
from unmask.tasks import get_task


def matmul_rate(device: str, dtype: torch.dtype) -> float:
    """FLOP/s of a large matmul on this device in the model's dtype (the floor's denominator)."""
    n = 1024 if device == "cpu" else 8192
    x, w = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        F.linear(x, w)
    sync(device)
    t, reps = time.perf_counter(), 20
    for _ in range(reps):
        F.linear(x, w)
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def row_flops(a) -> int:
    """Weight-matmul FLOPs of one row through one layer (Q, K, V, O, gate, up, down)."""
    d, hd = a.d_model, a.head_dim
    return 2 * (2 * d * a.n_heads * hd + 2 * d * a.n_kv_heads * hd + 3 * d * a.mlp_hidden)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--recipe", default="fast-dllm")
    p.add_argument("--task", default="arith")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--gen-len", type=int, default=None)
    p.add_argument("--cuda-graphs", action="store_true", help="replay one-row steps as graphs")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    lm = load(a.model, device=a.device)
    lm.graphs = a.cuda_graphs
    task = get_task(a.task, **({"gen_len": a.gen_len} if a.gen_len else {}))
    recipe = parse(a.recipe)
    samples = task.samples("test", a.n)
    rate = matmul_rate(a.device, next(lm.model.parameters()).dtype)
    run, log = lm.model.run, []

    def timed(canvas, *args, **kw):
        sync(a.device)
        t = time.perf_counter()
        hidden, rows = run(canvas, *args, **kw)
        sync(a.device)
        log.append((time.perf_counter() - t, int(rows.sum()), int(rows[0, 0]) == canvas.shape[1]))
        return hidden, rows

    lm.model.run = timed
    kw = {"gen_len": task.gen_len, "block_len": task.block_len}
    generate(lm, samples[0].prompt, recipe, **kw)  # warm-up
    log.clear()
    wall = 0.0
    for s in samples:
        wall += generate(lm, s.prompt, recipe, **kw)[0].metrics.wall_s
    a_ = lm.args
    out = {}
    for name, full in (("block-start full forwards", True), ("block steps", False)):
        part = [x for x in log if x[2] == full]
        t = sum(x[0] for x in part)
        floor = sum(x[1] for x in part) * row_flops(a_) / rate
        out[name] = (len(part), t, floor)
    host = wall - sum(v[1] for v in out.values())
    n = len(samples)
    graphs = ", CUDA graphs" if a.cuda_graphs else ""
    print(
        f"{a.recipe} on {a.model}, {a.task}, {n} samples, {a.threads} thread(s){graphs}; matmul "
        f"rate {rate / 1e9:.0f} GFLOP/s"
    )
    print(f"{'part':28s} {'calls/sample':>12s} {'ms/sample':>10s} {'floor ms':>9s} {'x floor':>8s}")
    for name, (calls, t, floor) in out.items():
        ratio = t / floor if floor else float("nan")
        print(
            f"{name:28s} {calls / n:12.2f} {1e3 * t / n:10.3f} {1e3 * floor / n:9.3f} {ratio:8.2f}"
        )
    print(f"{'host work':28s} {'':12s} {1e3 * host / n:10.3f}")
    print(f"{'total':28s} {'':12s} {1e3 * wall / n:10.3f}")


if __name__ == "__main__":
    main()
