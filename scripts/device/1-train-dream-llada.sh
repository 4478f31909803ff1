#!/bin/bash
# Run as-is on the lent GPU machine (device tool) in session 3, from the repository root; see
# README "Models" and "On a GPU". Carried paths: runs/tiny-llada, runs/tiny-dream (or their checkpoint).
# One device call: GPU checks, then three training runs side by side, then evaluations.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20 TOKENIZERS_PARALLELISM=false
U="python3 -m unmask.cli"
nvidia-smi -L
python3 -c "import torch,tokenizers,safetensors,tqdm,matplotlib;print(torch.__version__, torch.cuda.get_device_name())"
cp -r runs/tiny-dream runs/tiny-dream-25k
cp -r runs/tiny-llada runs/tiny-llada-30k
T=${TRAIN_S:-300}
(time timeout $T $U train --family dream --out runs/tiny-dream --steps 15000 --device cuda --workers 3 --threads 2) > $OUT/train-dream15k.log 2>&1 &
(time timeout $T $U train --family dream --out runs/tiny-dream-25k --steps 25000 --device cuda --workers 3 --threads 2) > $OUT/train-dream25k.log 2>&1 &
(time timeout $T $U train --family llada --out runs/tiny-llada-30k --steps 30000 --device cuda --workers 3 --threads 2) > $OUT/train-llada30k.log 2>&1 &
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_refresh.py tests/test_generate.py 2>&1 | tail -25 > $OUT/gpu-tests.txt
wait
for r in tiny-dream tiny-dream-25k tiny-llada-30k; do tail -c 300 runs/$r/history.jsonl; done
{
for r in tiny-dream tiny-dream-25k; do
  $U eval --model runs/$r/checkpoint --task arith --n 500 --batch 100 --dtype float32 2>&1 | tail -1
done
for rec in vanilla fast-dllm cadllm dynamic-dllm; do
  $U eval --model runs/tiny-llada-30k/checkpoint --task arith --n 500 $([ $rec = cadllm ] && echo "--batch 1 --n 200" || echo "--batch 100") --recipe $rec --dtype float32 2>&1 | tail -1
done
} > $OUT/evals.jsonl 2>&1
cat $OUT/evals.jsonl | cut -c1-200
tar czf $OUT/dream15k.tgz runs/tiny-dream
tar czf $OUT/dream25k.tgz runs/tiny-dream-25k
tar czf $OUT/llada30k.tgz runs/tiny-llada-30k
ls -la $OUT
