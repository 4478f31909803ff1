#!/bin/bash
# Run as-is on the lent GPU machine (device tool) in session 3, from the repository root; see
# README "Models" and "On a GPU". Carried paths: runs/tiny-llada, runs/tiny-dream (or their checkpoint).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20 TOKENIZERS_PARALLELISM=false
U="python3 -m unmask.cli"
cp -r runs/tiny-llada runs/tiny-llada-20k
cp -r runs/tiny-llada runs/tiny-llada-20k-b256
T=${TRAIN_S:-270}
(time timeout $T $U train --family llada --out runs/tiny-llada-30k --steps 30000 --device cuda --workers 3 --threads 2) > $OUT/train-llada30k.log 2>&1 &
(time timeout $T $U train --family llada --out runs/tiny-llada-20k --steps 20000 --device cuda --workers 3 --threads 2) > $OUT/train-llada20k.log 2>&1 &
(time timeout $T $U train --family llada --out runs/tiny-llada-20k-b256 --steps 20000 --batch 256 --device cuda --workers 6 --threads 2) > $OUT/train-llada20k-b256.log 2>&1 &
wait
for r in tiny-llada-30k tiny-llada-20k tiny-llada-20k-b256; do tail -n1 runs/$r/history.jsonl; done
ev() { $U eval --task arith --dtype float32 "$@" 2>&1 | tail -1; }
{
for m in unmask/checkpoints/tiny-llada runs/tiny-llada-30k/checkpoint runs/tiny-llada-20k/checkpoint runs/tiny-llada-20k-b256/checkpoint; do
  for rec in vanilla fast-dllm dynamic-dllm vanilla+unmask=threshold:tau=0.5; do ev --model $m --recipe $rec --n 500 --batch 100; done
  ev --model $m --recipe cadllm --n 200 --batch 1
done
for rec in fast-dllm dynamic-dllm vanilla+unmask=threshold:tau=0.5; do ev --model runs/tiny-dream/checkpoint --recipe $rec --n 500 --batch 100; done
ev --model runs/tiny-dream/checkpoint --recipe cadllm-dream --n 200 --batch 1
} > $OUT/evals2.jsonl
tar czf $OUT/llada30k.tgz runs/tiny-llada-30k
tar czf $OUT/llada20k.tgz runs/tiny-llada-20k
tar czf $OUT/llada20kb.tgz runs/tiny-llada-20k-b256
