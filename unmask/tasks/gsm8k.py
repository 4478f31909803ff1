"""GSM8K from the official jsonl files, prompted and scored the way lm-evaluation-harness does.

Reads local files only (the user gives the path; nothing is downloaded, no GSM8K text ships here).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from unmask.tasks.base import SPLITS, DataError, Sample, Task

# lm-eval's gsm8k filters: strict takes the first "#### N"; flexible takes the last number.
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval's exact_match for gsm8k ignores these (after the regexes, on both sides) and case.
IGNORED = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))
MATCHES = ("strict", "flexible")


def normalize(text: str) -> str:
    for pattern in IGNORED:
        text = pattern.sub("", text)
    return text.strip().lower()


def strict_answer(text: str) -> str | None:
    found = STRICT.search(text)
    return found.group(1) if found else None


def flexible_answer(text: str) -> str | None:
    found = FLEXIBLE.findall(text)
    if not found:
        return None
    return next(group for group in found[-1] if group)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); expected JSON lines") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not {"question", "answer"} <= row.keys():
            raise DataError(f"{path}:{i}: expected an object with 'question' and 'answer'")
        for key in ("question", "answer"):
            if not isinstance(row[key], str):
                raise DataError(
                    f"{path}:{i}: {key!r} must be a string, got {type(row[key]).__name__}"
                )
        rows.append(row)
    return rows


class Gsm8k(Task):
    """Few-shot GSM8K: "Question: ...\\nAnswer: ..." exemplars from the train file, then the test
    question. `match` picks the metric `score` uses; `grade` reports both."""

    name = "gsm8k"
    stop = ("Question:",)

    def __init__(
        self,
        data: str | Path | None = None,
        train: str | Path | None = None,
        shots: int = 5,
        match: str = "strict",
        gen_len: int = 256,
        block_len: int = 32,
    ) -> None:
        super().__init__(shots=shots, gen_len=gen_len, block_len=block_len)
        if data is None:
            raise DataError(
                "gsm8k needs its test file: pass --data PATH (the official test.jsonl, "
                "or a directory holding test.jsonl and train.jsonl)"
            )
        if match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}, got {match!r}")
        path = Path(data).expanduser()
        if path.is_dir():
            path = path / "test.jsonl"
        if not path.is_file():
            raise DataError(f"gsm8k: no such file {path}")
        self.paths = {"test": path, "train": Path(train).expanduser() if train else None}
        if self.paths["train"] is None:
            self.paths["train"] = path.with_name("train.jsonl")
        self.match = match
        self._rows: dict[str, list[dict[str, Any]]] = {}

    def _split(self, split: str) -> list[dict[str, Any]]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split not in self._rows:
            path = self.paths[split]
            if not path.is_file():
                raise DataError(
                    f"gsm8k: few-shot exemplars come from {path}, which does not exist "
                    "(pass train=PATH, or shots=0)"
                )
            self._rows[split] = read_jsonl(path)
        return self._rows[split]

    def _shots_prefix(self) -> str:
        # lm-eval samples exemplars at random per question; we take the first `shots` of the
        # train file, the same for every question: reproducible, and one shared prompt prefix.
        if self.shots == 0:
            return ""
        train = self._split("train")
        if len(train) < self.shots:
            raise DataError(f"gsm8k: {self.paths['train']} holds fewer than {self.shots} exemplars")
        return "".join(
            f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in train[: self.shots]
        )

    def samples(self, split: str, n: int, start: int = 0) -> list[Sample]:
        rows = self._split(split)[start : start + n]
        prefix = self._shots_prefix()
        return [
            Sample(
                prompt=f"{prefix}Question: {r['question']}\nAnswer:",
                reference=r["answer"],
                answer=normalize(r["answer"]),
            )
            for r in rows
        ]

    def extract(self, text: str) -> str | None:
        found = strict_answer(text) if self.match == "strict" else flexible_answer(text)
        return None if found is None else normalize(found)

    def grade(self, sample: Sample, text: str) -> dict[str, Any]:
        strict, flexible = strict_answer(text), flexible_answer(text)
        strict_ok = strict is not None and normalize(strict) == sample.answer
        flexible_ok = flexible is not None and normalize(flexible) == sample.answer
        return {
            "correct": strict_ok if self.match == "strict" else flexible_ok,
            "extracted": self.extract(text),
            "strict_match": strict_ok,
            "flexible_extract": flexible_ok,
        }
