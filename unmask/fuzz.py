"""A fuzzer for the `unmask` command line: random argument vectors over every subcommand (spec
strings built from the recipe grammar and mangled, numbers at and past their limits) and random or
damaged bytes as the files a user hands it (config.json, tokenizer files, weights, data files,
training states). Each case runs in-process with a time limit; a case fails when an exception
escapes `cli.main`, a traceback is printed, or it runs past the limit.

Run: `python -m unmask.fuzz --cases 2000 --seed 0` (prints the cases tried and any failures).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from unmask import cli
from unmask.recipe import PRESETS

ROLE_VALUES = {
    "blocks": ["fixed", "fixed:len={i}", "fixed:steps={i}", "cadllm:min_len={i},max_len={i}"],
    "refresh": [
        "none",
        "dual",
        "prefix",
        "dkv:interval={i}",
        "dllm-cache:rho={f}",
        "dcu:budget={i}",
    ],
    "scorer": ["maxprob", "topv:v_min={i}", "random"],
    "unmask": ["quota", "threshold:tau={f}", "factor:factor={f}", "apd:alpha={f}", "cadllm"],
}
NUMBERS = [
    "0",
    "1",
    "-1",
    "2",
    "7",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "99999999999999999999",
    "0.5",
    "",
    "x",
    "1.5",
    "-0",
    "1e-9",
    "3" * 40,
]
FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
    "special_tokens_map.json",
]


@dataclass
class Case:
    argv: list[str]
    damage: str  # what was done to the files, for the report


def number(rng: random.Random, bad: float = 0.5) -> str:
    """With probability `bad` a value at or past a limit (or not a number), else a small valid
    one (so that many cases get past parsing into the work itself)."""
    return rng.choice(NUMBERS) if rng.random() < bad else str(rng.randint(1, 40))


def fraction(rng: random.Random) -> str:
    return rng.choice(NUMBERS) if rng.random() < 0.2 else f"{rng.random():.3f}"


def spec(rng: random.Random) -> str:
    parts = [rng.choice(list(PRESETS))] if rng.random() < 0.8 else []
    for _ in range(rng.randint(0, 3)):
        role = rng.choice(
            [*ROLE_VALUES, *ROLE_VALUES, "gen_len", "temperature", "seed", "eos_exit"]
        )
        role = "bogus" if rng.random() < 0.05 else role
        if role in ROLE_VALUES:
            value = rng.choice(ROLE_VALUES[role]).format(i=number(rng, 0.2), f=fraction(rng))
        else:
            value = number(rng, 0.2)
        parts.append(f"{role}={value}")
    text = "+".join(parts)
    if rng.random() < 0.1:  # mangle: drop, duplicate or swap a character, or insert junk
        chars = list(text) or [" "]
        k = rng.randrange(len(chars))
        op = rng.choice(["drop", "dup", "junk"])
        if op == "drop":
            del chars[k]
        elif op == "dup":
            chars.insert(k, chars[k])
        else:
            chars.insert(k, rng.choice([":", "=", "+", ",", " ", "\x00", "é", "\udcff"]))
        text = "".join(chars)
    return text


def random_bytes(rng: random.Random, original: bytes) -> bytes:
    kind = rng.choice(["random", "truncate", "flip", "empty", "json"])
    if kind == "random":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000)))
    if kind == "truncate":
        return original[: rng.randrange(max(1, len(original)))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(rng.randint(1, 20)):
            if data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
        return bytes(data)
    if kind == "empty":
        return b""
    values = [None, True, -1, 0, 3.5, "x", [], {}, [1, 2], 10**30, "nan"]
    try:
        obj = json.loads(original)
    except ValueError:
        obj = {}
    if isinstance(obj, dict) and obj and rng.random() < 0.8:
        key = rng.choice(sorted(obj))
        obj[key] = rng.choice(values)
    else:
        obj = rng.choice(values)
    return json.dumps(obj).encode()


class Fuzzer:
    def __init__(self, root: Path, model: str, seed: int) -> None:
        from unmask.models.load import resolve

        self.rng = random.Random(seed)
        self.root = root
        self.good = resolve(model)
        self.ckpt = root / "ckpt"
        self.data = root / "data"
        self.run = root / "run"

    def reset_files(self) -> None:
        shutil.rmtree(self.ckpt, ignore_errors=True)
        shutil.copytree(self.good, self.ckpt)
        self.data.mkdir(exist_ok=True)
        rows = [{"question": "Tom has 2 apples. How many?", "answer": "2 apples.\n#### 2"}] * 3
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (self.data / "test.jsonl").write_text(text)
        (self.data / "train.jsonl").write_text(text)

    def case(self) -> Case:
        rng = self.rng
        self.reset_files()
        damage = "none"
        model = str(self.good)
        if rng.random() < 0.25:
            name = rng.choice(FILES)
            path = self.ckpt / name
            path.write_bytes(random_bytes(rng, path.read_bytes() if path.exists() else b"{}"))
            damage, model = f"ckpt/{name}", str(self.ckpt)
        command = rng.choice(["generate", "eval", "bench", "train", "average", "bogus"])
        small = ["--gen-len", rng.choice(["1", "4", "8", "8", "16", number(rng)])]
        if command == "generate":
            prompt = rng.choice(["hi", "", "\udcff\udcfe", "x" * 5000, "<|mdm_mask|>" * 3, "é"])
            argv = ["generate", "--model", model, *small, "--recipe", spec(rng), prompt]
            argv += rng.choice([[], ["--json"], ["--plot-conf", str(self.root / "c.png")]])
        elif command in ("eval", "bench"):
            task = rng.choice(["arith", "reverse", "wordy", "gsm8k", "math500", "bogus"])
            argv = [command, "--model", model, "--task", task, *small, "--n", rng.choice("123")]
            if task in ("gsm8k", "math500") or rng.random() < 0.1:
                data = self.data / "test.jsonl"
                if rng.random() < 0.5:
                    data.write_bytes(random_bytes(rng, data.read_bytes()))
                    damage = "data/test.jsonl"
                argv += ["--data", str(data)]
            for flag in ("--start", "--batch", "--shots"):
                if rng.random() < 0.3:
                    argv += [flag, number(rng, 0.3)]
            if command == "eval":
                argv += ["--recipe", spec(rng)]
            else:
                argv += ["--recipes", ",".join(spec(rng) for _ in range(rng.randint(1, 3)))]
                argv += ["--warmup", "0"] if "--warmup" in _flags("bench") else []
            if rng.random() < 0.3:
                flag = "--jsonl" if command == "eval" else rng.choice(["--json", "--records"])
                argv += [
                    flag,
                    rng.choice([str(self.root / "o.json"), "/nonexistent/o", "/dev/full"]),
                ]
        elif command == "train":
            shutil.rmtree(self.run, ignore_errors=True)
            self.run.mkdir()
            state = self.run / "train_state.pt"
            if rng.random() < 0.3:
                state.write_bytes(random_bytes(rng, b""))
                damage = "run/train_state.pt"
            argv = ["train", "--out", str(self.run), "--steps", rng.choice(["1", "2", number(rng)])]
            argv += ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--mlp-hidden", "16"]
            argv += ["--batch", rng.choice(["2", number(rng)]), "--save-every", "1"]
            argv += rng.choice(
                [
                    [],
                    ["--tasks", rng.choice(["wordy", "bogus", "arith:x", ""])],
                    ["--seed", number(rng)],
                    ["--lr", number(rng)],
                ]
            )
        elif command == "average":
            argv = [
                "average",
                model,
                str(self.good),
                "--out",
                str(self.root / f"avg{rng.random()}"),
            ]
        else:
            argv = [rng.choice(["bogus", "--help-me", ""]), number(rng)]
        if command == "train" and "--steps" in argv:
            i = argv.index("--steps") + 1
            if argv[i].lstrip("-").isdigit() and int(argv[i]) > 2:
                argv[i] = "2"  # a valid long run is work, not a hang
        return Case(argv, damage)


def _flags(command: str) -> set[str]:
    p = cli.parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices[command]._option_string_actions)


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def run_case(case: Case, limit_s: float) -> str | None:
    """None when the case ended well (exit code, no traceback), else what went wrong."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(case.argv)
            except SystemExit as e:  # argparse's usage errors
                code = e.code
    except Timeout:
        return f"ran past {limit_s:.0f} s"
    except Exception as e:  # noqa: BLE001 - that is what a fuzzer looks for
        return f"{type(e).__name__}: {e}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    text = err.getvalue()
    if "Traceback" in text:
        return "traceback printed: " + text.strip().splitlines()[-1][:200]
    if code not in (0, 2):
        return f"exit code {code}"
    if code == 2:
        errors = [line for line in text.splitlines() if "error:" in line]
        if len(errors) != 1:
            return f"exit 2 with {len(errors)} error lines: {text.strip()[-200:]}"
    return None


def fuzz(cases: int, seed: int, model: str = "tiny-llada", limit_s: float = 30.0, log=print):
    """Run `cases` cases; returns (tried, failures as (case, what))."""
    import torch

    torch.set_num_threads(1)
    failures = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="unmask-fuzz-") as tmp:
        os.chdir(tmp)  # outputs with relative names land in the temp dir
        try:
            fz = Fuzzer(Path(tmp), model, seed)
            t0 = time.perf_counter()
            for k in range(cases):
                case = fz.case()
                what = run_case(case, limit_s)
                if what is not None:
                    failures.append((case, what))
                    log(f"case {k}: {what}\n  argv {case.argv!r}\n  damage {case.damage}")
                if (k + 1) % 100 == 0:
                    log(
                        f"{k + 1} cases, {len(failures)} failures, {time.perf_counter() - t0:.0f} s"
                    )
        finally:
            os.chdir(cwd)
    return cases, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m unmask.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--limit", type=float, default=30.0, help="seconds per case before a hang")
    args = p.parse_args(argv)
    tried, failures = fuzz(args.cases, args.seed, args.model, args.limit)
    print(f"{tried} cases tried, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
