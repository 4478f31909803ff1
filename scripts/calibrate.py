"""Issue 13's calibration of a `wordy` checkpoint, in one bench run: vanilla, fast-dllm and the
no-cache threshold sweep (tau 0.9 / 0.7 / 0.5 / 0.3), then each target with its verdict.

    python scripts/calibrate.py --model runs/dev/avg --start 1000 --n 40 --json runs/dev/cal.json
    python scripts/calibrate.py --from runs/dev/cal.json      # the verdicts of an earlier run

Targets (LLaDA; Dream in brackets): vanilla >= 90% [85%]; fast-dllm at 2.5-5 [2.5-6] generated
positions per forward and within 2 points of vanilla; accuracy falls as tau falls, tau 0.5 at
least 5 points below tau 0.9; answers fill 40-70% of gen_len.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SWEEP = (0.9, 0.7, 0.5, 0.3)
RECIPES = ["vanilla", "fast-dllm", *(f"vanilla+unmask=threshold:tau={t}" for t in SWEEP)]


def verdicts(result: dict, dream: bool) -> list[tuple[str, str, bool]]:
    runs = {r["recipe"]: r for r in result["runs"]}
    van, fast = runs["vanilla"], runs["fast-dllm"]
    acc = {t: runs[f"vanilla+unmask=threshold:tau={t}"]["accuracy"] for t in SWEEP}
    hi = 6.0 if dream else 5.0
    floor = 0.85 if dream else 0.90
    pos = fast["positions_per_nfe"]
    fill = van["answer_fill"]
    sweep = " / ".join(f"{100 * acc[t]:.1f}" for t in SWEEP)
    return [
        (
            f"vanilla >= {100 * floor:.0f}%",
            f"{100 * van['accuracy']:.1f}%",
            van["accuracy"] >= floor,
        ),
        (
            f"fast-dllm 2.5-{hi:g} positions per forward",
            f"{pos:.2f} ({fast['answer_tokens_per_nfe']:.2f} answer tokens)",
            2.5 <= pos <= hi,
        ),
        (
            "fast-dllm within 2 points of vanilla",
            f"{100 * fast['accuracy']:.1f}%",
            fast["accuracy"] >= van["accuracy"] - 0.02,
        ),
        (
            "tau 0.9/0.7/0.5/0.3 falls",
            sweep,
            all(acc[a] >= acc[b] for a, b in zip(SWEEP[:-1], SWEEP[1:], strict=True)),
        ),
        (
            "tau 0.5 >= 5 points below tau 0.9",
            f"{100 * (acc[0.9] - acc[0.5]):.1f} points",
            acc[0.9] - acc[0.5] >= 0.05,
        ),
        ("answer fills 40-70% of gen_len", f"{100 * fill:.0f}%", 0.40 <= fill <= 0.70),
    ]


def family(model: str) -> str:
    from unmask.models.load import read_config, resolve

    return read_config(resolve(model))[2].family


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--start", type=int, default=1000, help="1000: the dev slice; 0: test")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--json", help="write the bench JSON here")
    p.add_argument("--from", dest="source", help="check an earlier run's bench JSON instead")
    a = p.parse_args()
    if a.source:
        result = json.loads(Path(a.source).read_text())
    else:
        if not a.model:
            p.error("--model or --from is needed")
        out = a.json or "calibration.json"
        cmd = [sys.executable, "-m", "unmask.cli", "bench", "--model", a.model, "--task", "wordy"]
        cmd += ["--start", str(a.start), "--n", str(a.n), "--recipes", ",".join(RECIPES)]
        cmd += ["--json", out]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)  # (the JSON: --json)
        result = json.loads(Path(out).read_text())
    dream = family(result["model"]) == "dream"
    rows = verdicts(result, dream)
    where = "dev" if result["start"] >= 1000 else "test"
    print(f"\n{result['model']} on wordy ({where} slice from {result['start']}, n {result['n']})")
    for target, value, ok in rows:
        print(f"  {'ok  ' if ok else 'MISS'} {target:44s} {value}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
