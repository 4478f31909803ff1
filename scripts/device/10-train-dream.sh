#!/bin/bash
# Rewritten in session 14, not yet run (no GPU lent since session 3). One device call
# (carry: training): the two #13 levers the CPU cannot afford, side by side on the GPU, each cut
# at a time limit at a save:
#   - small-dream: a long semi-AR continuation (P 0.5) from the newest committed mean in
#     training/small-dream (sar4-avg if present, else sar3-avg), 12k steps on a cosine from 2e-4;
#   - small-llada: the "longer semi-AR run at batch 256" from the shipped small-llada (P 0.5).
# The means of each run's last snapshots come back as one tarball to unpack here, where the
# calibration runs (scripts/calibrate.py on the CPU, float32, as for the shipped models).
#   run(carry=["training"], timeout_s=560): bash scripts/device/10-train-dream.sh
# A CPU smoke of the script itself: DEV=cpu TRAIN_S=60 DREAM_STEPS=8 LLADA_STEPS=8 SAVE=2 EVAL_N=2 \
#   OUT=/tmp/o bash scripts/device/10-train-dream.sh
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 TOKENIZERS_PARALLELISM=false
U="python3 -m unmask.cli"
DEV=${DEV:-cuda}
T=${TRAIN_S:-360}
DS=${DREAM_STEPS:-12000}
LS=${LLADA_STEPS:-3000}
SAVE=${SAVE:-500}
[ "$DEV" = cuda ] && nvidia-smi -L
mkdir -p runs/dev "$OUT"
start=training/small-dream/sar4-avg
[ -d $start ] || start=training/small-dream/sar3-avg
echo "dream starts from $start"
common="--tasks wordy --device $DEV --workers 4 --threads 2 --snapshots --save-every $SAVE"
(time timeout $T $U train --family dream --out runs/gpu-dream --init $start --steps $DS \
  --lr 2e-4 --warmup 50 --semi-ar 0.5 $common) > $OUT/train-gpu-dream.log 2>&1 &
(time timeout $T $U train --family llada --out runs/gpu-llada --init small-llada --steps $LS \
  --batch 256 --lr 1.5e-4 --warmup 20 --semi-ar 0.5 $common) > $OUT/train-gpu-llada.log 2>&1 &
wait
# The mean of the last four snapshots each run reached (a run cut early averages what it saved).
for r in gpu-dream gpu-llada; do
  tail -n1 runs/$r/history.jsonl
  snaps=$(ls -d runs/$r/snapshots/step-* 2>/dev/null | sort -t- -k2 -n | tail -n4)
  [ "$(echo $snaps | wc -w)" -ge 2 ] && $U average $snaps --out runs/dev/$r-avg
  echo "$r: $(echo $snaps | wc -w) snapshots averaged: $snaps"
done
# A first look on the GPU; the figures that count are the CPU's calibration.
for m in runs/dev/gpu-dream-avg runs/dev/gpu-llada-avg; do
  [ -d $m ] || continue
  for rec in vanilla fast-dllm; do
    $U eval --model $m --recipe $rec --task wordy --dtype float32 --start 1000 --n ${EVAL_N:-200} \
      --batch 100 --device $DEV 2>&1 | tail -1 | cut -c1-400
  done
done > $OUT/evals.jsonl
cat $OUT/evals.jsonl
# What comes back: the means and the histories; the snapshots and optimiser states stay behind.
rm -rf runs/gpu-*/snapshots runs/gpu-*/train_state.pt
tar czf $OUT/gpu-runs.tgz runs/gpu-dream runs/gpu-llada runs/dev
ls -la $OUT
