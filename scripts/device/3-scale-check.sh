#!/bin/bash
# Run as-is on the lent GPU machine (device tool) in session 3, from the repository root; see
# README "Models" and "On a GPU". Carried paths: runs/tiny-llada, runs/tiny-dream (or their checkpoint).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
U="python3 -m unmask.cli"
set -x
nvidia-smi --query-gpu=name,memory.total --format=csv
timeout 200 python3 scripts/scale_check.py --family llada --out /tmp/llada-8b
ls -la /tmp/llada-8b
timeout 200 $U bench --model /tmp/llada-8b --device cuda --task arith --n 2 \
  --recipes vanilla,fast-dllm,fast-dllm-prefix,dkv-cache,dllm-cache,dynamic-dllm-dcu,dynamic-dllm,cadllm \
  --json $OUT/llada8b-bench.json 2>&1 | grep -v "it/s\|sample/s\|s/sample" | tail -15
nvidia-smi --query-gpu=memory.used --format=csv
rm -rf /tmp/llada-8b
timeout 100 python3 scripts/scale_check.py --family dream --layers 4 --out /tmp/dream-4l
timeout 100 $U bench --model /tmp/dream-4l --device cuda --task arith --n 2 \
  --recipes vanilla,fast-dllm,dynamic-dllm,cadllm-dream --json $OUT/dream4l-bench.json 2>&1 | grep -v "it/s\|sample/s\|s/sample" | tail -8
