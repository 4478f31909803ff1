"""The task registry: `get_task(name, **knobs)`; the generated suite (TASKS) and the file-backed
public benchmarks (BENCHMARKS). The Task API itself is in base.py, each task in its own file."""

from __future__ import annotations

from unmask.tasks.base import DataError, Sample, Task
from unmask.tasks.gsm8k import Gsm8k
from unmask.tasks.humaneval import HumanEval
from unmask.tasks.math500 import Math500
from unmask.tasks.synthetic import Arith, Reverse
from unmask.tasks.wordy import Wordy

# Generated: every sample of every split is a function of the knobs (what the trainer draws from).
TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Arith, Reverse, Wordy)}
# Read from local files the user has (or an installed package ships); nothing is downloaded.
BENCHMARKS: dict[str, type[Task]] = {cls.name: cls for cls in (Gsm8k, HumanEval, Math500)}


def get_task(name: str, **knobs: object) -> Task:
    """Build the task `name` with its constructor knobs, e.g. `get_task("arith", n_ops=4)` or
    `get_task("gsm8k", data="gsm8k/test.jsonl", shots=5)`."""
    cls = TASKS.get(name) or BENCHMARKS.get(name)
    if cls is None:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}; "
            f"benchmarks: {', '.join(sorted(BENCHMARKS))}"
        )
    try:
        return cls(**knobs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        bad = str(e).rsplit("argument", 1)[1].strip()
        raise ValueError(f"task {name!r} takes no option {bad}") from None


__all__ = [
    "BENCHMARKS",
    "TASKS",
    "Arith",
    "DataError",
    "Gsm8k",
    "HumanEval",
    "Math500",
    "Reverse",
    "Sample",
    "Task",
    "Wordy",
    "get_task",
]
