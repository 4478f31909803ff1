#!/bin/bash
# Prepared in session 4 and NOT yet run (no GPU was lent to that session). One device call:
# continue the shipped tiny-llada (runs/tiny-llada, step 30000) three ways side by side, and
# tiny-dream one way, then a first look on the DEV slice (--start 1000); evaluate further on the
# CPU. Tracked files of runs/tiny-llada and runs/tiny-dream travel with the tree.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 TOKENIZERS_PARALLELISM=false
U="python3 -m unmask.cli"
nvidia-smi -L
T=${TRAIN_S:-460}
for c in b256-38k b512-34k b128-42k; do cp -r runs/tiny-llada runs/llada-$c; done
cp -r runs/tiny-dream runs/dream-b256-20k
tr() { (time timeout $T $U train --threads 2 --device cuda "$@") ; }
tr --family llada --out runs/llada-b256-38k --steps 38000 --batch 256 --workers 4 > $OUT/train-b256.log 2>&1 &
tr --family llada --out runs/llada-b512-34k --steps 34000 --batch 512 --workers 5 > $OUT/train-b512.log 2>&1 &
tr --family llada --out runs/llada-b128-42k --steps 42000 --batch 128 --workers 3 > $OUT/train-b128.log 2>&1 &
tr --family dream --out runs/dream-b256-20k --steps 20000 --batch 256 --workers 4 > $OUT/train-dream.log 2>&1 &
wait
for r in llada-b256-38k llada-b512-34k llada-b128-42k dream-b256-20k; do echo $r; tail -n1 runs/$r/history.jsonl; done
ev() { $U eval --task arith --dtype float32 "$@" 2>&1 | tail -1; }
{
for m in unmask/checkpoints/tiny-llada runs/llada-b256-38k/checkpoint runs/llada-b512-34k/checkpoint runs/llada-b128-42k/checkpoint unmask/checkpoints/tiny-dream runs/dream-b256-20k/checkpoint; do
  for rec in fast-dllm dynamic-dllm; do ev --model $m --recipe $rec --start 1000 --n 500 --batch 100; done
done
} > $OUT/evals.jsonl
python3 -c "
import json,sys
for l in open('$OUT/evals.jsonl'):
    try: d=json.loads(l)
    except Exception: print(l[:150]); continue
    print(d['model'][-30:], d['recipe'], d['start'], d['n'], d['accuracy'])
"
for r in llada-b256-38k llada-b512-34k llada-b128-42k dream-b256-20k; do tar czf $OUT/$r.tgz runs/$r; done
ls -la $OUT
