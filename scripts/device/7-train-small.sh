#!/bin/bash
# Prepared in session 5, not yet run (no GPU was lent). One device call (carry: training): train
# small-llada on wordy from its committed state in training/small-llada (or from tiny-llada if
# there is none) and small-dream from tiny-dream, side by side on the GPU, each cut at TRAIN_S
# seconds at a save; the run directories come back as tarballs to unpack into runs/ here.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 TOKENIZERS_PARALLELISM=false
U="python3 -m unmask.cli"
nvidia-smi -L
T=${TRAIN_S:-420}
mkdir -p runs
[ -d training/small-llada ] && cp -r training/small-llada runs/small-llada
[ -d training/small-dream ] && cp -r training/small-dream runs/small-dream
common="--tasks wordy --steps 12000 --lr 1e-3 --device cuda --workers 4 --threads 2 --snapshots"
(time timeout $T $U train --family llada --out runs/small-llada --init tiny-llada $common) \
  > $OUT/train-small-llada.log 2>&1 &
(time timeout $T $U train --family dream --out runs/small-dream --init tiny-dream $common) \
  > $OUT/train-small-dream.log 2>&1 &
wait
for r in small-llada small-dream; do echo $r; tail -n1 runs/$r/history.jsonl; done
ev() { $U eval --task wordy --dtype float32 --start 1000 --n 200 --batch 100 "$@" 2>&1 | tail -1; }
{
  for r in small-llada small-dream; do
    for rec in vanilla fast-dllm; do ev --model runs/$r/checkpoint --recipe $rec; done
  done
} > $OUT/evals.jsonl
cut -c1-300 $OUT/evals.jsonl
tar czf $OUT/small-llada.tgz runs/small-llada
tar czf $OUT/small-dream.tgz runs/small-dream
ls -la $OUT
