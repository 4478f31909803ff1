"""Tests for unmask/tasks: determinism, train/test disjointness, scoring, reference arithmetic.

Token-length checks use the tiny tokenizer built from the tasks' own text (tests/test_tokenizer.py
covers the tokenizer itself).
"""

from __future__ import annotations

import re
from pathlib import Path

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
    assert set(TASKS) == {"arith", "reverse", "wordy"}
    assert get_task("arith", n_ops=4).n_ops == 4
    with pytest.raises(ValueError, match="arith, reverse, wordy"):
        get_task("gsm9k")


@pytest.mark.parametrize("name", ["arith", "reverse", "wordy"])
def test_deterministic(name: str) -> None:
    first = get_task(name).samples("train", 50)
    assert get_task(name).samples("train", 50) == first
    # Sample i does not depend on where the slice starts.
    assert get_task(name).samples("train", 10, start=40) == first[40:]
    assert get_task(name).samples("test", 20) != first[:20]


@pytest.mark.parametrize("name", ["arith", "reverse", "wordy"])
def test_train_test_disjoint(name: str) -> None:
    task = get_task(name, **({"min_len": 3, "max_len": 4} if name == "reverse" else {}))
    test = {question_of(s) for s in task.samples("test", 5000)}
    # Shots included: no question in a train prompt is one of the held-out test questions.
    train = {q for s in task.samples("train", 400) for q in re.findall(r"Question: (.*)", s.prompt)}
    assert len(train) > 400 and not test & train
    # With 3..4 digits there are 11000 lists: an unguarded stream would collide often.
    assert name != "reverse" or len(test) < 5000


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


# ---- wordy -------------------------------------------------------------------------------------

WORD_OPS = {"+": "+", "plus": "+", "-": "-", "minus": "-"}
# Every way a wordy reference states an equation, each as (left, op, right, result) groups.
STATED = [
    re.compile(r"(\d+) (\+|-|plus|minus) (\d+) (?:=|is|makes|gives) (\d+)"),
    re.compile(r"adding (\d+) to (\d+) (?:is|makes|gives) (\d+)", re.IGNORECASE),
    re.compile(r"taking (\d+) from (\d+) leaves (\d+)", re.IGNORECASE),
]


def stated_equations(text: str) -> list[tuple[int, str, int, int]]:
    """(total, op, amount, result) for every equation a wordy reference states, in text order;
    "a + v" (the amount first) is read back as (v, +, a), knowing `a` is the question's."""
    found = []
    for m in STATED[0].finditer(text):
        found.append((m.start(), (int(m[1]), WORD_OPS[m[2]], int(m[3]), int(m[4]))))
    for m in STATED[1].finditer(text):
        found.append((m.start(), (int(m[2]), "+", int(m[1]), int(m[3]))))
    for m in STATED[2].finditer(text):
        found.append((m.start(), (int(m[2]), "-", int(m[1]), int(m[3]))))
    return [eq for _, eq in sorted(found)]


def as_steps(stated, question: str) -> list[tuple[int, str, int, int]]:
    """Put each stated equation in (running total, op, amount, result) order."""
    numbers = [int(n) for n in re.findall(r"\d+", question)]
    value, steps = numbers[0], []
    for left, op, right, result in stated:
        if op == "+" and left != value:
            left, right = right, left  # "7 + 12 = 19" with 12 the running total
        steps.append((left, op, right, result))
        value = result
    return steps


def test_wordy_plain_wording_is_arith() -> None:
    import random

    wordy, arith = get_task("wordy", variation=0.0), get_task("arith", n_ops=4)
    for seed in range(50):
        assert wordy._problem(random.Random(seed)) == arith._problem(random.Random(seed))


def test_wordy_one_question_many_correct_references() -> None:
    import random

    task = get_task("wordy")
    chain = task._chain(random.Random("one question"))
    refs = {task.word(chain, random.Random(k)) for k in range(40)}
    assert len(refs) >= 30  # a distribution over phrasings, not one string
    for ref in refs:
        sample = Sample(prompt="", reference=ref, answer=chain.answer)
        assert task.score(sample, ref) and ref.endswith(f"\n#### {chain.answer}")
        # Every step is stated once, in order, whatever its wording.
        steps = [(s.value, s.op, s.amount, s.result) for s in chain.steps]
        assert as_steps(stated_equations(ref), chain.question) == steps
    # The training stream words its questions independently too: over many draws every choice
    # point takes more than one value.
    train = task.samples("train", 300)
    assert sum(r.reference.startswith("First, ") for r in train) > 20
    assert 40 < sum(" plus " in r.reference for r in train) < 260


def test_wordy_references_are_right_on_both_splits() -> None:
    task = get_task("wordy")
    for sample in task.samples("train", 300) + task.samples("test", 300):
        question = question_of(sample)
        numbers = [int(n) for n in re.findall(r"\d+", question)]
        steps = as_steps(stated_equations(sample.reference), question)
        assert len(steps) == task.n_ops
        value = numbers[0]
        for k, (total, op, amount, result) in enumerate(steps):
            assert total == value and amount == numbers[k + 1]
            value = value + amount if op == "+" else value - amount
            assert result == value >= 0
        assert sample.answer == str(value) and task.score(sample, sample.reference)


def test_wordy_score_is_exact() -> None:
    task = get_task("wordy")
    sample = task.samples("test", 1)[0]
    assert task.score(sample, sample.reference)
    wrong = str(int(sample.answer) + 1)
    for text in [f"#### {wrong}", sample.reference.replace(f"#### {sample.answer}", "####"), ""]:
        assert not task.score(sample, text), text
    # Malformed text before the final line is ignored; a missing final line scores None.
    assert task.extract(f"12 plus plus = = 7 {wrong}.\n#### {sample.answer}") == sample.answer
    assert task.extract(f"The answer is {sample.answer}.") is None


def test_wordy_lengths_in_tokens(tmp_path: Path) -> None:
    from unmask.train import TrainConfig, corpus

    # The tokenizer a wordy run builds (the trainer's corpus, on fewer samples).
    tokenizer = build_tokenizer("llada", corpus(TrainConfig(tasks={"wordy": 1.0}), 1000), tmp_path)
    task = get_task("wordy")
    assert (task.gen_len, task.block_len, task.n_ops) == (128, 32, 4)
    samples = task.samples("test", 300)
    answer_lens = [len(tokenizer.encode(s.reference)) + 1 for s in samples]
    fill = sum(answer_lens) / len(answer_lens) / task.gen_len
    assert 0.4 <= fill <= 0.7 and max(answer_lens) <= task.gen_len
    # Each alternative word is one token of a tokenizer built on the suite's text.
    for word in [" plus", " minus", "First", " since", " leaves", " answer", " After", " now"]:
        assert len(tokenizer.encode(word)) == 1, word


def test_wordy_invalid_knobs() -> None:
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="variation"):
            get_task("wordy", variation=bad)
