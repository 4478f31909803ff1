"""The `unmask` command: generate prints the answer and metrics (or one JSON object), and bad
input exits non-zero with a one-line message, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unmask import cli

PROMPT = "Question: Tom has 3 apples. He buys 2 more. How many apples does Tom have?"


def run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_prints_answer_and_metrics(tiny, capsys):
    code, out, err = run(["generate", "--model", str(tiny[0]), "--gen-len", "16", PROMPT], capsys)
    assert code == 0
    assert "nfe=16" in err and "rows/ar_floor=" in err


def test_generate_json_has_text_ids_and_metrics(tiny, capsys):
    argv = [
        "generate",
        "--model",
        str(tiny[0]),
        "--gen-len",
        "12",
        "--json",
        "--recipe",
        "fast-dllm",
        PROMPT,
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert len(record["ids"]) == 12 and isinstance(record["text"], str)
    assert record["metrics"]["nfe"] >= 1 and record["recipe"].startswith("blocks=fixed:len=32")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["generate", "   "], "empty prompt"),
        (["generate", "--gen-len", "0", "x"], "must be > 0"),
        (["generate", "--gen-len", "-3", "x"], "must be > 0"),
        (["generate", "--recipe", "nope", "x"], "unknown recipe 'nope'"),
        (["generate", "--recipe", "vanilla+blocks=fixed:len=abc", "x"], "'abc' is not a valid"),
        (["generate", "--recipe", "fast-dllm+unmask=threshold:tua=0.5", "x"], "unknown parameter"),
        (["generate", "--model", "/no/such/dir", "x"], "no model '/no/such/dir'"),
        (["generate", "--device", "foo", "x"], "unknown device 'foo'"),
        (["generate", "--device", "cuda:99", "x"], "CUDA GPU"),
        (["generate", "--device", "cpu:1", "x"], "one CPU device"),
        (["generate", "--device", "cpu", "--cuda-graphs", "x"], "--cuda-graphs needs a CUDA"),
        (["train", "--workers", "-1"], "must be >= 0"),
        (["train", "--device", "mps", "--out", "/nonexistent/x"], "unsupported device 'mps'"),
        (["train", "--semi-ar-blind", "0.5", "--out", "/nonexistent/x"], "pass both"),
        (["train", "--semi-ar", "0.5", "--semi-ar-blind", "2"], "must be in [0, 1]"),
        (["train", "--semi-ar-stale", "0.5", "--out", "/nonexistent/x"], "pass both"),
        (
            ["train", "--semi-ar", "0.5", "--semi-ar-blind", "0.5", "--semi-ar-stale", "0.6"]
            + ["--out", "/nonexistent/x"],
            "sum must be <= 1",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tiny, argv, message, capsys):
    if "--model" not in argv and argv[0] != "train":
        argv = [argv[0], "--model", str(tiny[0]), *argv[1:]]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_no_traceback_from_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "unmask.cli", "generate", "--model", str(tmp_path), "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "config.json" in proc.stderr


def test_train_task_mix(capsys):
    assert cli._task_mix("wordy") == {"wordy": 1.0}
    assert cli._task_mix("arith:0.85, reverse:0.15") == {"arith": 0.85, "reverse": 0.15}
    for bad, message in [
        ("gsm8k", "unknown task 'gsm8k'"),
        ("wordy,wordy", "named twice"),
        ("wordy:x", "not a number"),
        ("wordy:0", "must be > 0"),
        ("wordy:nan", "must be > 0"),
    ]:
        code, _, err = run(["train", "--tasks", bad, "--steps", "1"], capsys)
        assert code == 2 and message in err and "Traceback" not in err, bad


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--block-len", "8", "--recipe", "fast-dllm"], "conflicts with blocks=fixed:len=32"),
        (["--block-len", "8", "--recipe", "cadllm"], "--block-len does not apply"),
        (["--gen-len", "32", "--recipe", "vanilla+gen_len=16"], "conflicts with gen_len=16"),
    ],
)
def test_flags_and_recipe_must_agree(tiny, argv, message, capsys):
    code, _, err = run(["generate", "--model", str(tiny[0]), *argv, PROMPT], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    # Agreeing values, or a flag the recipe leaves open, are fine.
    agree = ["--block-len", "32", "--recipe", "fast-dllm", "--gen-len", "16"]
    assert run(["generate", "--model", str(tiny[0]), *agree, PROMPT], capsys)[0] == 0
    assert (
        run(
            ["generate", "--model", str(tiny[0]), "--block-len", "4", "--gen-len", "8", PROMPT],
            capsys,
        )[0]
        == 0
    )


def test_eval_and_bench_check_gen_len_against_each_recipe(tiny, capsys):
    for command, flag in (("eval", "--recipe"), ("bench", "--recipes")):
        argv = [command, "--model", str(tiny[0]), "--gen-len", "8", flag, "vanilla+gen_len=16"]
        code, _, err = run(argv, capsys)
        assert code == 2 and "conflicts with gen_len=16" in err
