#!/bin/bash
# Issue 17's speed check: one single-threaded process against 2 ranks under torchrun (one thread
# each), the whole command timed, on N arith samples (vanilla), in PAIRS alternating pairs; then
# the ratios, their median, and whether both wrote the same records. Run from the repository
# root with nothing else on the CPU:  scripts/dist_speed.sh [PAIRS] [N]
set -uo pipefail
pairs=${1:-6} n=${2:-48}
export PATH=$PWD/.venv/bin:$PATH OMP_NUM_THREADS=1
tmp=$(mktemp -d)
for i in $(seq 1 "$pairs"); do
  /usr/bin/time -a -o "$tmp/times" -f "single %e" \
    unmask eval --task arith --n "$n" --jsonl "$tmp/one.jsonl" >/dev/null 2>"$tmp/one.err"
  echo "rc $?" >>"$tmp/times"
  /usr/bin/time -a -o "$tmp/times" -f "ranks2 %e" \
    torchrun --nproc-per-node 2 --no-python -- unmask eval --task arith --n "$n" \
    --jsonl "$tmp/two.jsonl" >/dev/null 2>"$tmp/two.err"
  echo "rc $?" >>"$tmp/times"
done
python3 - "$tmp" <<'PY'
import json, statistics, sys
tmp = sys.argv[1]
vals, rcs = {"single": [], "ranks2": []}, []
it = iter(open(f"{tmp}/times").read().split())
for tok in it:
    if tok in vals:
        vals[tok].append(float(next(it)))
    elif tok == "rc":
        rcs.append(int(next(it)))
r = [a / b for a, b in zip(vals["single"], vals["ranks2"])]
print("one process (s):", vals["single"])
print("2 ranks (s):    ", vals["ranks2"])
print("exit codes:     ", rcs)
print("ratios:", [round(x, 2) for x in r], "median", round(statistics.median(r), 3),
      "total", round(sum(vals["single"]) / sum(vals["ranks2"]), 3))
strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != "wall_s"} for l in open(p)]
print("same records:", strip(f"{tmp}/one.jsonl") == strip(f"{tmp}/two.jsonl"))
PY
rm -rf "$tmp"
