"""Profile one decode of one recipe with torch.profiler: where a step's time goes (kernels, host
syncs, Python). Prints the top operators by device time and by host time.

    python scripts/profile_recipe.py --model tiny-llada --recipe fast-dllm [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from unmask.generate import generate
from unmask.models.load import load
from unmask.recipe import parse
from unmask.tasks import get_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--recipe", default="fast-dllm")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shots", type=int, default=None)
    p.add_argument("--gen-len", type=int, default=None)
    p.add_argument("--rows", type=int, default=25)
    a = p.parse_args()
    lm = load(a.model, device=a.device)
    task = get_task("arith")
    if a.shots is not None:
        task.shots = a.shots
    gen_len = a.gen_len or task.gen_len
    prompt = task.samples("test", 1)[0].prompt
    recipe = parse(a.recipe)

    def once():
        out = generate(lm, prompt, recipe, gen_len=gen_len, block_len=task.block_len)[0]
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    once()  # warm-up
    t0 = time.perf_counter()
    out = once()
    wall = time.perf_counter() - t0
    print(
        f"{a.recipe}: {out.metrics.nfe} NFE, {wall * 1e3:.1f} ms, "
        f"{wall * 1e3 / out.metrics.nfe:.2f} ms/step"
    )
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        once()
    key = "self_cuda_time_total" if a.device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.rows))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
