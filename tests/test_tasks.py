"""Tests for unmask/tasks: determinism, train/test disjointness, scoring, reference arithmetic.

Token-length checks use the tiny tokenizer built from the tasks' own text (tests/test_tokenizer.py
covers the tokenizer itself).
"""

from __future__ import annotations

import re

import pytest

from unmask.tasks import TASKS, Sample, get_task
from unmask.tokenizer import Tokenizer, build_tokenizer

EQUATION = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")


def question_of(sample: Sample) -> str:
    return sample.prompt.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    corpus = [
        s.prompt + " " + s.reference for name in TASKS for s in get_task(name).samples("train", 500)
    ]
    return build_tokenizer("llada", corpus, tmp_path_factory.mktemp("tok"))


def test_registry_and_unknown_name() -> None:
    assert set(TASKS) == {"arith", "reverse"}
    assert get_task("arith", n_ops=4).n_ops == 4
    with pytest.raises(ValueError, match="arith, reverse"):
        get_task("gsm9k")


@pytest.mark.parametrize("name", ["arith", "reverse"])
def test_deterministic(name: str) -> None:
    first = get_task(name).samples("train", 50)
    assert get_task(name).samples("train", 50) == first
    # Sample i does not depend on where the slice starts.
    assert get_task(name).samples("train", 10, start=40) == first[40:]
    assert get_task(name).samples("test", 20) != first[:20]


@pytest.mark.parametrize("name", ["arith", "reverse"])
def test_train_test_disjoint(name: str) -> None:
    task = get_task(name, **({"min_len": 3, "max_len": 4} if name == "reverse" else {}))
    test = {question_of(s) for s in task.samples("test", 5000)}
    # Shots included: no question in a train prompt is one of the held-out test questions.
    train = {q for s in task.samples("train", 400) for q in re.findall(r"Question: (.*)", s.prompt)}
    assert len(train) > 400 and not test & train
    # With 3..4 digits there are 11000 lists: an unguarded stream would collide often.
    assert name == "arith" or len(test) < 5000


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        get_task("arith").samples("dev", 1)


def test_arith_format() -> None:
    sample = get_task("arith").samples("test", 1)[0]
    shot, question = sample.prompt.split("\n\n")
    assert shot.startswith("Question: ") and "\nAnswer: " in shot and "\n#### " in shot
    assert question.startswith("Question: ") and question.endswith("?\nAnswer:")
    assert sample.reference.endswith(f"\n#### {sample.answer}")
    assert get_task("arith", shots=0).samples("test", 1)[0].prompt == question
    assert get_task("arith", shots=3).samples("test", 1)[0].prompt.count("Question: ") == 4


@pytest.mark.parametrize(
    "knobs", [{}, {"n_ops": 5, "max_operand": 50}, {"ops": "-", "n_ops": 4}, {"ops": "+"}]
)
def test_arith_reference_arithmetic(knobs: dict) -> None:
    task = get_task("arith", **knobs)
    for sample in task.samples("train", 200) + task.samples("test", 200):
        chain, final = sample.reference.split("\n")
        assert chain.endswith(".")
        steps = chain.removesuffix(".").split(". ")
        assert len(steps) == task.n_ops
        numbers = [int(n) for n in re.findall(r"\d+", question_of(sample))]
        value = numbers[0]
        for k, step in enumerate(steps):
            left, op, amount, result = EQUATION.fullmatch(step).groups()
            assert int(left) == value and op in task.ops
            assert 1 <= int(amount) <= task.max_operand and int(amount) == numbers[k + 1]
            value = value + int(amount) if op == "+" else value - int(amount)
            assert int(result) == value >= 0
        assert final == f"#### {value}" and sample.answer == str(value)
        assert task.score(sample, sample.reference)


def test_arith_score() -> None:
    task = get_task("arith")
    sample = next(s for s in task.samples("test", 50) if s.answer == "17")
    chain = sample.reference.split("\n")[0]
    accepted = [
        sample.reference,
        "#### 17",
        "####17",
        "#### 17.",
        "#### 17.0",
        f"{chain}\n#### 17<|eot_id|><|endoftext|><|endoftext|>",
        "#### 17\nQuestion: Tom has 3 pens.",
        "#### 3\n#### 17",
    ]
    rejected = [
        "#### 18",
        "#### 170",
        "#### 1.7",
        "#### -17",
        "#### 17\n#### 3",
        "17",
        chain,
        "#### ",
        "",
    ]
    for text in accepted:
        assert task.score(sample, text), text
    for text in rejected:
        assert not task.score(sample, text), text
    assert task.extract("#### 1,234") == "1234"
    assert task.extract("no answer") is None


def test_arith_lengths_in_tokens(tokenizer: Tokenizer) -> None:
    task = get_task("arith")
    samples = task.samples("test", 300)
    prompt_lens = [len(tokenizer.encode(s.prompt)) for s in samples]
    # +1: the end-of-turn token the model must also produce.
    answer_lens = [len(tokenizer.encode(s.reference)) + 1 for s in samples]
    assert min(prompt_lens) >= task.gen_len
    assert 0.4 * task.gen_len <= min(answer_lens) and max(answer_lens) <= 0.7 * task.gen_len


def test_reverse_format_and_score(tokenizer: Tokenizer) -> None:
    task = get_task("reverse")
    for sample in task.samples("test", 200):
        digits = question_of(sample).removeprefix("Reverse the list: ").split(" ")
        assert 5 <= len(digits) <= 8 and all(len(d) == 1 and d.isdigit() for d in digits)
        assert sample.reference == sample.answer == " ".join(reversed(digits))
        assert task.score(sample, sample.reference)
        assert len(tokenizer.encode(sample.reference)) + 1 <= task.gen_len
    sample = Sample(prompt="", reference="7 3 9 1 8", answer="7 3 9 1 8")
    for text in ["7 3 9 1 8", " 7  3 9 1 8 \n", "7 3 9 1 8<|eot_id|>", "\n7 3 9 1 8\nQuestion: x"]:
        assert task.score(sample, text), text
    for text in ["7 3 9 1", "7 3 9 1 8 4", "8 1 9 3 7", "73918", "", "Answer: 7 3 9 1 8"]:
        assert not task.score(sample, text), text


def test_invalid_knobs() -> None:
    with pytest.raises(ValueError):
        get_task("arith", ops="*")
    with pytest.raises(ValueError):
        get_task("arith", ops="-", n_ops=5, max_operand=5)
    with pytest.raises(ValueError):
        get_task("reverse", min_len=6, max_len=5)
