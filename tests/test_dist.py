"""`unmask eval` under torchrun (CPU, gloo, 2 processes): the same records as one process, in
sample order, written once by rank 0; a failing rank ends the run, naming the rank, within a
bound, and leaves no output behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TORCHRUN = shutil.which("torchrun", path=str(BIN)) or shutil.which("torchrun")
UNMASK = shutil.which("unmask", path=str(BIN))
pytestmark = pytest.mark.skipif(not (TORCHRUN and UNMASK), reason="torchrun/unmask not on PATH")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    # A port of its own per run: a rank of the previous test that torchrun is still stopping
    # may hold the default 29500 for a moment (seen once as a failure of the next test).
    port = ["--master-port", str(free_port())]
    cmd = [TORCHRUN, "--nproc-per-node", "2", *port, "--no-python", "--", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_two_ranks_give_the_records_of_one_process(tmp_path):
    args = ["eval", "--model", "tiny-llada", "--recipe", "fast-dllm", "--n", "7", "--start", "3"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    subprocess.run([UNMASK, *args, "--jsonl", str(one)], check=True, capture_output=True, env=ENV)
    out = torchrun(UNMASK, *args, "--jsonl", str(two))
    assert out.returncode == 0, out.stderr[-2000:]
    assert records(two) == records(one)
    assert [r["index"] for r in records(two)] == list(range(3, 10))
    summary = json.loads(out.stdout.strip().splitlines()[-1])  # printed once, by rank 0
    assert len(out.stdout.strip().splitlines()) == 1
    assert summary["ranks"] == 2 and summary["n"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]


def test_a_failing_rank_ends_the_run_and_names_itself(tmp_path):
    script = tmp_path / "fails_on_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "from unmask import bench, cli\n"
        "real = bench.run_samples\n"
        "def run(*a, **k):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        raise ValueError('this rank failed on purpose')\n"
        "    return real(*a, **k)\n"
        "bench.run_samples = run\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    out_file = tmp_path / "out.jsonl"
    argv = ["eval", "--model", "tiny-llada", "--n", "6", "--jsonl", str(out_file)]
    out = torchrun(sys.executable, str(script), *argv, timeout=90)  # no hang: a bound
    assert out.returncode != 0
    assert "error (rank 1 of 2): this rank failed on purpose" in out.stderr
    assert not out_file.exists() and [p.name for p in tmp_path.iterdir()] == [script.name]


def test_bench_under_two_ranks_gives_the_records_of_one_process(tmp_path):
    args = ["bench", "--model", "tiny-llada", "--recipes", "vanilla,fast-dllm", "--n", "5"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    subprocess.run([UNMASK, *args, "--records", str(one)], check=True, capture_output=True, env=ENV)
    out = torchrun(UNMASK, *args, "--records", str(two))
    assert out.returncode == 0, out.stderr[-2000:]
    assert records(two) == records(one)  # sample order, recipes interleaved per sample
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ranks"] == 2 and "summed decode times" in result["speed"]
    assert [r["recipe"] for r in result["runs"]] == ["vanilla", "fast-dllm"]
    # Rank 0's bars count the whole run (5 samples), not its own shard of 3.
    assert "/5 [" in out.stderr and "/3 [" not in out.stderr


def test_lm_eval_adapter_follows_the_launchers_ranks(tmp_path):
    """Under torchrun (as under `accelerate launch`), UnmaskLM reports its rank and world size
    and serves lm-eval's all_gather / gather_object / barrier; lm-eval then splits requests by
    rank. Each rank's answers equal a single process's for the same requests."""
    pytest.importorskip("lm_eval", reason="lm_eval not installed")
    script = tmp_path / "lm_eval_ranks.py"
    script.write_text(
        "import json, os\n"
        "from types import SimpleNamespace\n"
        "import torch\n"
        "from unmask.lm_eval_adapter import UnmaskLM\n"
        "lm = UnmaskLM(model='tiny-llada', recipe='vanilla', device='cpu')\n"
        "kw = {'until': ['\\n\\n'], 'max_gen_toks': 16}\n"
        "reqs = [SimpleNamespace(args=(f'{i}+{i}=', kw)) for i in range(4)]\n"
        "mine = reqs[lm.rank :: lm.world_size]\n"
        "texts = lm.generate_until(mine, disable_tqdm=True)\n"
        "counts = lm.all_gather(torch.tensor(len(mine))).tolist()\n"
        "got = lm.gather_object(texts, dst=0)\n"
        "lm.barrier()\n"
        "if lm.rank == 0:\n"
        "    print(json.dumps({'world': lm.world_size, 'counts': counts, 'got': got}))\n"
    )
    out = torchrun(sys.executable, str(script))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["world"] == 2 and result["counts"] == [2, 2]
    from types import SimpleNamespace

    from unmask.lm_eval_adapter import UnmaskLM

    lm = UnmaskLM(model="tiny-llada", recipe="vanilla", device="cpu")
    kw = {"until": ["\n\n"], "max_gen_toks": 16}
    alone = lm.generate_until([SimpleNamespace(args=(f"{i}+{i}=", kw)) for i in range(4)], True)
    assert result["got"] == [alone[0::2], alone[1::2]]


@pytest.mark.slow
def test_lm_eval_under_torchrun_gives_one_process_s_samples(tmp_path):
    """The real thing: `torchrun -m lm_eval` on the example task logs the same prompts (few-shot
    exemplars included) and answers as one lm-eval process. lm-eval's default random exemplar
    draw differs across rank layouts, which is why the task takes the first ones."""
    pytest.importorskip("lm_eval", reason="lm_eval not installed")
    repo = Path(__file__).resolve().parent.parent
    argv = [
        "-m", "lm_eval", "--model", "unmask", "--model_args", "model=tiny-llada,recipe=fast-dllm",
        "--tasks", "unmask_arith", "--include_path", "examples/lm_eval", "--num_fewshot", "1",
        "--apply_chat_template", "--limit", "8", "--log_samples",
    ]  # fmt: skip

    def samples(out: Path) -> dict:
        (path,) = out.glob("*/samples_unmask_arith_*.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return {r["doc_id"]: (r["arguments"], r["resps"]) for r in rows}

    kw = dict(capture_output=True, text=True, timeout=300, env=ENV, cwd=repo)
    one = subprocess.run([sys.executable, *argv, "--output_path", str(tmp_path / "one")], **kw)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [TORCHRUN, "--nproc-per-node", "2", *argv, "--output_path", str(tmp_path / "two")], **kw
    )
    assert two.returncode == 0, two.stderr[-2000:]
    alone, ranked = samples(tmp_path / "one"), samples(tmp_path / "two")
    assert len(alone) == 8 and ranked == alone


def test_cuda_ranks_without_a_gpu_are_one_line_errors():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = torchrun(UNMASK, "eval", "--n", "2", "--device", "cuda")
    assert out.returncode != 0
    # The first rank to fail prints its one line (torchrun may stop the other before it does;
    # torchrun's own report of the failed child is a traceback of its own).
    line = r"error \(rank [01] of 2\): --device cuda: this machine has no CUDA GPU"
    assert re.search(line, out.stderr)
    assert "_cuda_setDevice" not in out.stderr
