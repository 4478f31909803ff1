#!/usr/bin/env bash
# Token identity across a change: decode every preset on N arith problems with both tiny models
# from the source tree TREE (a checkout, e.g. a worktree of the previous commit) and write the
# per-sample records under OUT/<model>.jsonl. Compare two OUTs with scripts/same_tokens.py.
# Usage: scripts/same_tokens.sh TREE OUT [N]
#   git worktree add /tmp/base HEAD~1 && scripts/same_tokens.sh /tmp/base runs/same/base 200
#   scripts/same_tokens.sh . runs/same/new 200 && .venv/bin/python scripts/same_tokens.py runs/same/{base,new}
set -euo pipefail
tree=$(cd "${1:?tree}" && pwd); out=${2:?out}; n=${3:-200}
mkdir -p "$out"; out=$(cd "$out" && pwd)
py=$(pwd)/.venv/bin/python
presets=$(cd "$tree" && "$py" -c "from unmask.recipe import PRESETS; print(','.join(PRESETS))")
for model in tiny-llada tiny-dream; do
  (cd "$tree" && OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONPATH="$tree" "$py" -m unmask.cli bench \
    --model "$model" --task arith --n "$n" --recipes "$presets" \
    --records "$out/$model.jsonl" > "$out/$model.log" 2>&1) || { tail -3 "$out/$model.log"; exit 1; }
  echo "$model: $(wc -l < "$out/$model.jsonl") records"
done
