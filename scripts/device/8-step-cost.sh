#!/bin/bash
# Issue 15's GPU checks (prepared, not yet run: no device was lent in session 6). Run from the
# repository root on the lent machine; writes under $OUT. About 6 minutes on one H200.
# 8B LLaDA shapes with random weights, bf16, batch 1: where a step's time goes per recipe,
# against the weight-streaming floor (16 GB per forward), on ~900-row canvases (gen_len 768).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
set -x
nvidia-smi --query-gpu=name,memory.total --format=csv
pip install -q -e . 2>&1 | tail -1
timeout 200 python3 scripts/scale_check.py --family llada --out /tmp/llada-8b
for r in vanilla fast-dllm dllm-cache dynamic-dllm; do
  timeout 100 python3 scripts/time_split.py --model /tmp/llada-8b --device cuda --recipe $r \
    --n 2 --gen-len 768 2>&1 | tee -a $OUT/step-cost.txt
done
timeout 100 python3 -m unmask.cli bench --model /tmp/llada-8b --device cuda --task arith --n 2 \
  --gen-len 256 --recipes vanilla,fast-dllm,dllm-cache,dynamic-dllm --json $OUT/bench-8b.json \
  2>&1 | grep -v "sample/s" | tail -8
