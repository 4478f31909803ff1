#!/bin/bash
# Copy the resumable state of runs in progress into training/ (tracked), for the next session:
# scripts/save_training.sh small-llada small-dream
set -euo pipefail
for run in "$@"; do
  src=runs/$run dst=training/$run
  [ -f "$src/train_state.pt" ] || { echo "no state in $src" >&2; exit 1; }
  rm -rf "$dst"; mkdir -p "$dst"
  cp -r "$src/train_state.pt" "$src/train_config.json" "$src/history.jsonl" "$src/tokenizer" "$dst/"
  echo "$dst: step $(tail -n1 "$src/history.jsonl")"
done
