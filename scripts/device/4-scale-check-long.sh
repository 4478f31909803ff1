#!/bin/bash
# Run as-is on the lent GPU machine (device tool) in session 3, from the repository root; see
# README "Models" and "On a GPU". Carried paths: runs/tiny-llada, runs/tiny-dream (or their checkpoint).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
U="python3 -m unmask.cli"
timeout 60 python3 scripts/scale_check.py --family llada --out /tmp/llada-8b
timeout 300 $U bench --model /tmp/llada-8b --device cuda --task arith --shots 8 --gen-len 256 --n 1 \
  --recipes vanilla,fast-dllm,fast-dllm-prefix,dllm-cache,dynamic-dllm \
  --json $OUT/llada8b-long.json 2>&1 | grep -v "it/s\|sample/s\|s/sample" | tail -9
