"""Inputs a careless user or an attacker gives: each is a one-line error (never a traceback), costs
what the work costs (not what a number says), and loses no result. One test per class found in
the hardening review; the sandbox's own classes are in test_sandbox.py, the spec ranges in
test_recipe.py."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from unmask import bench as bench_mod
from unmask import cli


def run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---- cost independent of --start ---------------------------------------------------------------


def test_start_costs_nothing_however_large(tiny, capsys) -> None:
    t0 = time.perf_counter()
    argv = ["eval", "--model", str(tiny[0]), "--n", "1", "--gen-len", "8", "--start", "10000000"]
    code, out, _ = run(argv, capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["start"] == 10_000_000
    # Building the 10 million samples before it (as shot fitting did) takes minutes.
    assert time.perf_counter() - t0 < 20


# ---- training states ---------------------------------------------------------------------------


class Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-ran",))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory holding a real (tiny) training state and its tokenizer."""
    from unmask.train import TrainConfig, train

    cfg = TrainConfig(out=str(tmp_path / "run"), steps=5, batch=4, d_model=32, n_layers=2)
    cfg.tasks, cfg.mlp_hidden, cfg.save_every = {"reverse": 1.0}, 64, 5
    train(cfg, log=lambda *_: None)
    return tmp_path / "run"


def resume(run_dir: Path, capsys):
    argv = ["train", "--out", str(run_dir), "--steps", "6", "--d-model", "32", "--n-layers", "2"]
    return run(argv, capsys)


def test_a_planted_training_state_runs_no_code(run_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(run_dir)
    torch.save({"config": {}, "model": Planted()}, run_dir / "train_state.pt")
    code, _, err = resume(run_dir, capsys)
    one_line_error(code, err, "not a training state", "refused to unpickle")
    assert not (run_dir / "planted-ran").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "list", "config"])
def test_a_damaged_training_state_is_one_line(run_dir: Path, damage: str, capsys) -> None:
    state = run_dir / "train_state.pt"
    data = state.read_bytes()
    if damage == "empty":
        state.write_bytes(b"")
    elif damage == "truncated":
        state.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        state.write_bytes(os.urandom(4096))
    elif damage == "list":
        torch.save([1, 2, 3], state)
    else:
        saved = torch.load(state, weights_only=True)
        saved["config"]["no_such_knob"] = 1
        torch.save(saved, state)
    code, _, err = resume(run_dir, capsys)
    one_line_error(code, err, str(state))


def test_resuming_without_the_tokenizer_names_it(run_dir: Path, capsys) -> None:
    shutil.rmtree(run_dir / "tokenizer")
    code, _, err = resume(run_dir, capsys)
    one_line_error(code, err, "no tokenizer in", "--fresh")
    assert "None" not in err


def test_a_real_training_state_loads_weights_only_and_resumes(run_dir: Path, capsys) -> None:
    from unmask.train import load_state

    state, cfg = load_state(run_dir / "train_state.pt")
    assert state["step"] == 5 and cfg.family == "llada" and state["opt"]["state"]
    code, _, _ = resume(run_dir, capsys)
    assert code == 0 and load_state(run_dir / "train_state.pt")[0]["step"] == 6


# ---- nothing lost ------------------------------------------------------------------------------


def no_decoding(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("decoded before the output paths were checked")

    monkeypatch.setattr(bench_mod, "run_samples", refuse)
    monkeypatch.setattr(bench_mod, "generate", refuse)


@pytest.mark.parametrize(
    ("flag", "path", "needle"),
    [
        ("--json", "/nonexistent-dir/out.json", "no such directory"),
        ("--records", "/nonexistent-dir/r.jsonl", "no such directory"),
        ("--plot", "/nonexistent-dir/p.png", "no such directory"),
        ("--plot", "PLOT.xyz", "cannot draw a xyz file"),
        ("--json", ".", "is a directory"),
    ],
)
def test_bench_checks_every_output_before_any_work(
    tiny, flag, path, needle, capsys, monkeypatch, tmp_path
) -> None:
    monkeypatch.chdir(tmp_path)
    no_decoding(monkeypatch)
    argv = ["bench", "--model", str(tiny[0]), "--n", "1000", "--recipes", "vanilla", flag, path]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, needle)


def interrupt_after(monkeypatch, calls: int) -> None:
    real = bench_mod.run_samples
    count = {"n": 0}

    def flaky(*a, **k):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(bench_mod, "run_samples", flaky)


def test_an_interrupted_bench_writes_what_it_measured(tiny, capsys, monkeypatch, tmp_path) -> None:
    out, records = tmp_path / "b.json", tmp_path / "r.jsonl"
    interrupt_after(monkeypatch, 5)  # 2 recipes: two full rounds, then one more record
    argv = ["bench", "--model", str(tiny[0]), "--n", "50", "--gen-len", "8"]
    argv += ["--recipes", "vanilla,fast-dllm", "--json", str(out), "--records", str(records)]
    code, stdout, err = run(argv, capsys)
    assert code == 130 and "interrupted: partial" in err
    result = json.loads(out.read_text())
    assert result == json.loads(stdout.splitlines()[-1])
    assert result["partial"] is True and result["n"] == 2
    assert [r["n"] for r in result["runs"]] == [2, 2]
    lines = records.read_text().splitlines()
    assert len(lines) == 5  # every measured record, the unfinished round's too


def test_an_interrupted_eval_keeps_its_records(tiny, capsys, monkeypatch, tmp_path) -> None:
    out = tmp_path / "e.jsonl"
    interrupt_after(monkeypatch, 3)
    argv = ["eval", "--model", str(tiny[0]), "--n", "10", "--gen-len", "8", "--jsonl", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 130 and "interrupted: partial" in err
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["partial"] is True and summary["n"] == 3
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_failing_eval_leaves_an_old_file_as_it_was(capsys, tmp_path, monkeypatch, fail_at):
    from unmask import bench

    real, calls = bench.generate, []

    def fails(*args, **kw):
        calls.append(1)
        if len(calls) == fail_at:
            raise ValueError("the decoder failed on purpose")
        return real(*args, **kw)

    monkeypatch.setattr(bench, "generate", fails)
    out = tmp_path / "old.jsonl"
    out.write_text('{"kept": true}\n')
    argv = ["eval", "--model", "tiny-llada", "--recipe", "cadllm", "--n", "2"]
    code, _, err = run([*argv, "--jsonl", str(out)], capsys)
    assert code == 2 and "failed on purpose" in err and "Traceback" not in err
    assert out.read_text() == '{"kept": true}\n'
    left = sorted(p.name for p in tmp_path.iterdir() if p != out)
    if fail_at == 1:  # nothing measured: no temp file left
        assert left == []
    else:  # the first sample's record is kept beside it, and the error says where
        assert len(left) == 1 and left[0] in err
        assert len((tmp_path / left[0]).read_text().splitlines()) == 1


# ---- one-line errors for bad inputs ------------------------------------------------------------


def test_a_prompt_that_is_not_utf8(tiny, capsys) -> None:
    bad = b"\xff\xfe what".decode("utf-8", "surrogateescape")  # what argv gives for those bytes
    code, _, err = run(["generate", "--model", str(tiny[0]), "--gen-len", "8", bad], capsys)
    one_line_error(code, err, "not valid UTF-8")


@pytest.fixture
def broken(tiny, tmp_path) -> Path:
    path = tmp_path / "ckpt"
    shutil.copytree(tiny[0], path)
    return path


def edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("tokenizer", "cannot load tokenizer"),
        ("tokenizer_config", "cannot load tokenizer"),
        ("config_list", "expected a JSON object"),
        ("config_binary", "not valid JSON"),
        ("string_width", "must be an integer"),
        ("bool_layers", "must be an integer"),
        ("float_theta", "rope_theta must be a number"),
        ("mask_id", "outside the vocabulary"),
        ("eos_id", "outside the vocabulary"),
        ("heads", "do not divide evenly"),
        ("small_vocab", "outside the vocabulary of 8"),
    ],
)
def test_a_damaged_checkpoint_is_one_line(broken: Path, damage: str, needle: str, capsys) -> None:
    cfg = json.loads((broken / "config.json").read_text())
    width = "d_model" if cfg["model_type"] == "llada" else "hidden_size"
    layers = "n_layers" if cfg["model_type"] == "llada" else "num_hidden_layers"
    vocab = cfg.get("embedding_size") or cfg["vocab_size"]
    if damage == "tokenizer":
        (broken / "tokenizer.json").write_text('{"model": ')
    elif damage == "tokenizer_config":
        (broken / "tokenizer_config.json").write_bytes(b"\xff\xfe\x00")
    elif damage == "config_list":
        (broken / "config.json").write_text("[1, 2]")
    elif damage == "config_binary":
        (broken / "config.json").write_bytes(os.urandom(64))
    elif damage == "string_width":
        edit_config(broken, **{width: str(cfg[width])})
    elif damage == "bool_layers":
        edit_config(broken, **{layers: True})
    elif damage == "float_theta":
        edit_config(broken, rope_theta="high")
    elif damage == "mask_id":
        edit_config(broken, mask_token_id=vocab + 5)
    elif damage == "eos_id":
        edit_config(broken, eos_token_id=vocab)
    elif damage == "heads":
        heads = "n_heads" if cfg["model_type"] == "llada" else "num_attention_heads"
        edit_config(broken, **{heads: 3})
    else:
        edit_config(broken, vocab_size=8, embedding_size=8)
    code, _, err = run(["generate", "--model", str(broken), "--gen-len", "8", "hi"], capsys)
    one_line_error(code, err, needle)


def test_the_tokenizer_may_not_outgrow_the_embeddings(broken: Path) -> None:
    from unmask.models.load import CheckpointError, load

    tok = json.loads((broken / "tokenizer.json").read_text())
    tok["added_tokens"].append(
        {
            "id": 100_000,
            "content": "<|extra|>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    (broken / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match="ids but the model only"):
        load(broken)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ('{"question": 3, "answer": "#### 1"}\n', "'question' must be a string"),
        ('{"question": "q", "answer": null}\n', "'answer' must be a string"),
        ("[1, 2]\n", "expected an object"),
    ],
)
def test_gsm8k_rows_with_wrong_types(tmp_path: Path, rows: str, needle: str, capsys) -> None:
    (tmp_path / "test.jsonl").write_text(rows)
    argv = ["eval", "--model", "tiny-llada", "--task", "gsm8k", "--data", str(tmp_path)]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, needle)


@pytest.mark.parametrize("task", ["gsm8k", "math500", "humaneval"])
def test_a_binary_data_file_is_named(tmp_path: Path, task: str, capsys) -> None:
    data = tmp_path / "test.jsonl"
    data.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\xfa" * 10)
    argv = ["eval", "--model", "tiny-llada", "--task", task, "--data", str(data)]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, str(data))


# ---- clear messages ----------------------------------------------------------------------------


def test_an_oversized_seed_names_the_range(tiny, capsys) -> None:
    spec = "vanilla+seed=99999999999999999999"
    code, _, err = run(["generate", "--model", str(tiny[0]), "--recipe", spec, "hi"], capsys)
    one_line_error(code, err, "seed must be in [0, 2^63 - 1]")
    code, _, err = run(["train", "--seed", "99999999999999999999", "--steps", "1"], capsys)
    one_line_error(code, err, "must be below 2^63")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_full_disk_names_what_could_not_be_written(tiny, capsys, tmp_path) -> None:
    argv = ["eval", "--model", str(tiny[0]), "--n", "1", "--gen-len", "8", "--jsonl", "/dev/full"]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, "No space left on device: /dev/full")
    # A plot whose write fails must not report success.
    plot = tmp_path / "full.png"
    plot.symlink_to("/dev/full")
    argv = ["bench", "--model", str(tiny[0]), "--n", "1", "--gen-len", "8", "--recipes"]
    code, _, err = run([*argv, "vanilla", "--plot", str(plot)], capsys)
    one_line_error(code, err, f"No space left on device: {plot}")
    assert f"plot: {plot}" not in err
