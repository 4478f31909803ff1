"""Deterministic synthetic tasks the tiny checkpoints are trained and measured on; exact match.

`Arith` (GSM8K-format chained word problems) and `Reverse` (a list to reverse); no file I/O, no
tokenizer: lengths in tokens are checked in the tests against the tokenizer built from this text.
"""

from __future__ import annotations

import random
import re
from abc import abstractmethod
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cached_property

from unmask.tasks.base import SPLITS, Sample, Task

# The train stream never repeats one of the first N_HELD_OUT test questions; the test stream beyond
# that index is not guarded (nobody evaluates that far on a synthetic task).
N_HELD_OUT = 5000
# Redraws before giving up on a collision-free problem: only reachable with degenerate knobs that
# leave fewer distinct questions than the held-out set holds.
MAX_REDRAWS = 1000


@dataclass(frozen=True)
class Step:
    value: int  # the running total before the step
    op: str  # "+" or "-"
    amount: int
    result: int


@dataclass(frozen=True)
class Chain:
    """One chained word problem before it is worded: the question and its solution steps."""

    question: str
    name: str
    pronoun: str
    item: str
    steps: tuple[Step, ...]

    @property
    def answer(self) -> str:
        return str(self.steps[-1].result)


@dataclass(frozen=True)
class Problem:
    question: str
    reference: str
    answer: str


class SyntheticTask(Task):
    """Samples per split; sample i of a split is a pure function of (knobs, split, i)."""

    @abstractmethod
    def _problem(self, rng: random.Random) -> Problem:
        """Draw one problem; all randomness comes from `rng`."""

    def samples(self, split: str, n: int, start: int = 0) -> list[Sample]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [self._sample(split, i) for i in range(start, start + n)]

    def _sample(self, split: str, i: int) -> Sample:
        problem = self._draw(split, i)
        taken = {problem.question}
        shots = []
        for k in range(self.shots):
            # Shots come from their own stream so that they never shift the main stream.
            shot = self._draw(f"shot-{split}", i * self.shots + k, avoid=taken)
            taken.add(shot.question)
            shots.append(f"Question: {shot.question}\nAnswer: {shot.reference}\n\n")
        prompt = "".join(shots) + f"Question: {problem.question}\nAnswer:"
        return Sample(prompt=prompt, reference=problem.reference, answer=problem.answer)

    def _draw(self, stream: str, i: int, avoid: set[str] | None = None) -> Problem:
        if stream == "test":
            return self._problem(self._rng(stream, i, 0))
        for attempt in range(MAX_REDRAWS):
            problem = self._problem(self._rng(stream, i, attempt))
            if problem.question not in self._held_out and problem.question not in (avoid or ()):
                return problem
        raise RuntimeError(
            f"{self.name}: no problem outside the test set after {MAX_REDRAWS} draws"
        )

    def _rng(self, stream: str, i: int, attempt: int) -> random.Random:
        # A str seed is hashed with SHA-512 by Random, so it is stable across runs (unlike hash()).
        return random.Random(f"{self.name}/{stream}/{i}/{attempt}")

    @cached_property
    def _held_out(self) -> frozenset[str]:
        return frozenset(self._draw("test", i).question for i in range(N_HELD_OUT))


# he/she names and plural items: a closed vocabulary, so a small BPE learns each word as one token.
NAMES = (
    ("Tom", "He"),
    ("Sam", "He"),
    ("Ben", "He"),
    ("Max", "He"),
    ("Leo", "He"),
    ("Ann", "She"),
    ("Mia", "She"),
    ("Eva", "She"),
    ("Zoe", "She"),
    ("Amy", "She"),
)
ITEMS = (
    "apples",
    "pens",
    "books",
    "cards",
    "coins",
    "eggs",
    "shells",
    "stamps",
    "toys",
    "rocks",
)
ADD_VERBS = ("buys {n} more", "finds {n} more", "gets {n} more")
SUB_VERBS = ("gives away {n}", "loses {n}", "sells {n}", "uses {n}")
FINAL_ANSWER = re.compile(r"####\s*(-?[\d,]*\d(?:\.\d+)?)")


class Arith(SyntheticTask):
    """Chained +/- word problems; reference "12 + 7 = 19. 19 - 5 = 14. 14 + 3 = 17.\\n#### 17"."""

    name = "arith"

    def __init__(
        self,
        n_ops: int = 3,
        max_operand: int = 20,
        ops: str = "+-",
        shots: int = 1,
        gen_len: int = 64,
        block_len: int = 16,
    ) -> None:
        super().__init__(shots=shots, gen_len=gen_len, block_len=block_len)
        if not ops or set(ops) - {"+", "-"}:
            raise ValueError(f"ops must be a non-empty string over '+-', got {ops!r}")
        if n_ops < 1 or max_operand < 1:
            raise ValueError(f"n_ops and max_operand must be >= 1, got {n_ops}, {max_operand}")
        if "+" not in ops and max_operand < n_ops + 1:
            # Subtraction only: the start must leave room for n_ops takeaways of at least 1.
            raise ValueError(f"ops='-' needs max_operand > n_ops, got {max_operand} <= {n_ops}")
        self.n_ops = n_ops
        self.max_operand = max_operand
        self.ops = ops

    def _problem(self, rng: random.Random) -> Problem:
        chain = self._chain(rng)
        steps = [f"{s.value} {s.op} {s.amount} = {s.result}." for s in chain.steps]
        return Problem(chain.question, " ".join(steps) + f"\n#### {chain.answer}", chain.answer)

    def _chain(self, rng: random.Random) -> Chain:
        """The question and its solution steps; the reference's wording is the caller's."""
        name, pronoun = rng.choice(NAMES)
        item = rng.choice(ITEMS)
        can_add = "+" in self.ops
        value = rng.randint(1 if can_add else self.n_ops, self.max_operand)
        sentences = [f"{name} has {value} {item}."]
        steps = []
        for k in range(self.n_ops):
            # Without '+' each takeaway leaves at least 1 per takeaway still to come, so the
            # running total never goes negative; with '+' an empty hand just adds instead.
            reserve = 0 if can_add else self.n_ops - k - 1
            op = rng.choice(self.ops)
            if op == "-" and value - reserve < 1:
                op = "+"
            if op == "+":
                amount = rng.randint(1, self.max_operand)
                verb, result = rng.choice(ADD_VERBS), value + amount
            else:
                amount = rng.randint(1, min(self.max_operand, value - reserve))
                verb, result = rng.choice(SUB_VERBS), value - amount
            sentences.append(f"{pronoun} {verb.format(n=amount)}.")
            steps.append(Step(value, op, amount, result))
            value = result
        sentences.append(f"How many {item} does {name} have?")
        return Chain(" ".join(sentences), name, pronoun, item, tuple(steps))

    def extract(self, text: str) -> str | None:
        """GSM8K convention: the number after the last "####"; text after it is ignored."""
        found = FINAL_ANSWER.findall(text)
        if not found:
            return None
        try:
            number = Decimal(found[-1].replace(",", ""))
        except InvalidOperation:
            return None
        # "17.0" and "017" name the same integer; a fractional answer is kept as written.
        return str(int(number)) if number == number.to_integral_value() else str(number)


class Reverse(SyntheticTask):
    """Reverse a list of digits: the contrast task, whose tokens can all be revealed at once."""

    name = "reverse"

    def __init__(
        self,
        min_len: int = 5,
        max_len: int = 8,
        shots: int = 1,
        gen_len: int = 32,
        block_len: int = 16,
    ) -> None:
        super().__init__(shots=shots, gen_len=gen_len, block_len=block_len)
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        self.min_len = min_len
        self.max_len = max_len

    def _problem(self, rng: random.Random) -> Problem:
        digits = [str(rng.randrange(10)) for _ in range(rng.randint(self.min_len, self.max_len))]
        answer = " ".join(reversed(digits))
        return Problem(f"Reverse the list: {' '.join(digits)}", answer, answer)

    def extract(self, text: str) -> str | None:
        """The first non-empty line, whitespace-normalised; special-token text ("<|...") ends it."""
        for line in text.split("<|", 1)[0].splitlines():
            if line.strip():
                return " ".join(line.split())
        return None
