"""Load test of `unmask serve` on loopback: N requests (mixed recipes and lengths) from C
concurrent clients, then the same requests one at a time, against one server. Checks every
answer equals its solo `generate` and prints requests/s and tokens/s of both.

The server runs as its own process (`unmask serve`, as deployed), so the clients' threads do not
share its interpreter lock; `--in-process` serves from a thread of this process instead.

    python scripts/serve_load.py --model tiny-llada --n 64 --clients 16 [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai

from unmask.generate import generate
from unmask.models.load import load
from unmask.recipe import parse
from unmask.serve import Limits, build_app, running
from unmask.tasks import get_task

RECIPES = ["vanilla", "fast-dllm", "cadllm", "dynamic-dllm"]


def load_test(url: str, a: argparse.Namespace, jobs: list) -> tuple[list, list, float, float]:
    """The jobs from a.clients concurrent clients, then one at a time: answers and walls."""
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="none", timeout=600)

    def ask(job):
        prompt, spec, n = job
        r = c.chat.completions.create(
            model=a.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=n,
            extra_body={"recipe": spec},
        )
        return r.choices[0].message.content, r.usage.completion_tokens

    ask(jobs[0])  # warm-up
    t = time.perf_counter()
    with ThreadPoolExecutor(a.clients) as pool:
        together = list(pool.map(ask, jobs))
    t_together = time.perf_counter() - t
    t = time.perf_counter()
    alone = [ask(j) for j in jobs]
    return together, alone, t_together, time.perf_counter() - t


@contextlib.contextmanager
def server_process(a: argparse.Namespace):
    """`unmask serve` in a child process on a free loopback port; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "unmask.cli", "serve", "--model", a.model, "--port", str(port)]
    cmd += ["--max-rows", str(a.clients), "--max-queue", str(a.n), "--timeout", "600"]
    cmd += ["--threads", str(a.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"unmask serve exited: {proc.stderr.read().decode()[-500:]}")
            if time.time() > deadline:
                raise SystemExit("unmask serve did not answer /health within 120 s")
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    p.add_argument("--in-process", action="store_true", help="serve from a thread of this process")
    a = p.parse_args()
    lm = load(a.model)
    prompts = [s.prompt for s in get_task("arith", shots=0).samples("test", a.n)]
    jobs = [(prompts[i], RECIPES[i % 4], (16, 32, 48, 64)[i // 4 % 4]) for i in range(a.n)]
    if a.in_process:
        limits = Limits(max_rows=a.clients, max_queue=a.n, timeout_s=600)
        serving = running(build_app(lm, a.model, "fast-dllm", limits))
    else:
        serving = server_process(a)
    with serving as url:
        together, alone, t_together, t_alone = load_test(url, a, jobs)
    same = sum(x[0] == y[0] for x, y in zip(together, alone, strict=True))
    solo = sum(
        x[0] == generate(lm, pr, parse(spec), gen_len=n)[0].text
        for x, (pr, spec, n) in zip(together, jobs, strict=True)
    )
    tokens = sum(x[1] for x in together)
    where = "in this process" if a.in_process else "in its own process"
    print(
        f"{a.n} requests ({', '.join(RECIPES)}; max_tokens 16-64), {a.clients} clients; "
        f"server {where}, {a.threads} thread(s)"
    )
    print(f"answers equal to one-at-a-time: {same}/{a.n}; equal to solo generate: {solo}/{a.n}")
    for name, wall in ((f"{a.clients} concurrent", t_together), ("one at a time", t_alone)):
        print(f"{name:14s}: {wall:7.2f} s  {a.n / wall:6.2f} req/s  {tokens / wall:7.1f} tok/s")
    print(f"speedup: {t_alone / t_together:.2f}x")


if __name__ == "__main__":
    main()
