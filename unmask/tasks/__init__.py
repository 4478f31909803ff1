"""The task registry: `get_task(name, **knobs)` and the `Sample`/`Task` types every task shares.

Generators live in synthetic.py; loaders for public benchmarks (GSM8K, ...) will sit beside it.
"""

from __future__ import annotations

from unmask.tasks.synthetic import Arith, Reverse, Sample, Task

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Arith, Reverse)}


def get_task(name: str, **knobs: object) -> Task:
    """Build the task `name` with its constructor knobs (e.g. `get_task("arith", n_ops=4)`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**knobs)


__all__ = ["TASKS", "Arith", "Reverse", "Sample", "Task", "get_task"]
