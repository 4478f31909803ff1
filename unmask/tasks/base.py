"""The Task API every task shares: `Sample`, `Task` (samples, extract, score, grade), `DataError`.

No task lives here: generated tasks are in synthetic.py, file-backed benchmarks in their own files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

SPLITS = ("train", "test")
# More exemplars than any context holds: a bigger count is a typo, and would cost its size.
MAX_SHOTS = 64


class DataError(ValueError):
    """A benchmark's data cannot be found or read; the message names the file and the fix."""


@dataclass(frozen=True)
class Sample:
    prompt: str  # the user message: few-shot exemplars + the question; no chat template applied
    reference: str  # the full target answer (chain of thought + final line, or test code)
    answer: str  # the final answer alone, e.g. "17"


class Task(ABC):
    """A named set of samples per split, and how to judge a generated text against a sample."""

    name: ClassVar[str]
    # Strings that end an answer: the text is cut at the first one (lm-eval's `until`).
    stop: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, shots: int, gen_len: int, block_len: int) -> None:
        if not 0 <= shots <= MAX_SHOTS:
            raise ValueError(f"shots must be in [0, {MAX_SHOTS}], got {shots}")
        if gen_len <= 0 or block_len <= 0:
            raise ValueError(f"gen_len and block_len must be > 0, got {gen_len}, {block_len}")
        self.shots = shots
        self.gen_len = gen_len
        self.block_len = block_len

    @abstractmethod
    def samples(self, split: str, n: int, start: int = 0) -> list[Sample]:
        """Samples start .. start+n of `split` (fewer when the split ends first)."""

    @abstractmethod
    def extract(self, text: str) -> str | None:
        """The final answer in a generated `text`, or None when it has none."""

    def preflight(self) -> None:
        """Raise, with the fix, when this task cannot grade here; called before any decoding.
        Most tasks grade by string comparison and can always grade."""
        return None

    def score(self, sample: Sample, text: str) -> bool:
        return self.extract(text) == sample.answer

    def grade(self, sample: Sample, text: str) -> dict[str, Any]:
        """Per-sample record fields: "correct", "extracted" and any task-specific ones; the
        boolean ones besides "correct" are averaged into the summary as extra metrics."""
        return {"correct": self.score(sample, text), "extracted": self.extract(text)}
