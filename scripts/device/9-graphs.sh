#!/bin/bash
# Issue 15's CUDA-graph checks (prepared in session 8, not yet run: no device was lent). Run from
# the repository root on the lent machine; writes under $OUT. About 8 minutes on one H200.
# 1. tests/test_gpu.py: exactness on CUDA, and replayed steps (--cuda-graphs) decoding every preset
#    as eager does on both tiny models in float32 and bfloat16.
# 2. 8B LLaDA shapes (random weights, bf16, batch 1, gen_len 768: ~900-row canvases): per-step
#    time of vanilla and fast-dllm, eager against replayed, to set beside the weight-streaming
#    floor (16 GB per forward: 3.4-5 ms).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
set -x
nvidia-smi --query-gpu=name,memory.total --format=csv
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 \
  | tee $OUT/test-gpu.txt
timeout 200 python3 scripts/scale_check.py --family llada --out /tmp/llada-8b > /dev/null
for g in "" --cuda-graphs; do
  for r in vanilla fast-dllm; do
    timeout 60 python3 scripts/time_split.py --model /tmp/llada-8b --device cuda --recipe $r \
      --n 2 --gen-len 768 $g 2>&1 | tail -6 | tee -a $OUT/step-cost-graphs.txt
  done
done
# 3. The shipped tiny models, whose steps are all launches: answer tokens/s with and without
#    replay, side by side (bench runs the recipes of a sample interleaved).
for g in "" --cuda-graphs; do
  timeout 90 python3 -m unmask.cli bench --model tiny-llada --device cuda --n 50 \
    --recipes vanilla,fast-dllm,cadllm,dkv-cache $g --json $OUT/bench-tiny${g:+-graphs}.json \
    2>&1 | grep -v "sample/s" | tail -6 | tee -a $OUT/bench-tiny.txt
done
