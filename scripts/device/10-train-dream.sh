#!/bin/bash
# Prepared in session 10, not yet run. One device call (carry: training): small-dream as
# small-llada was made. Its uniform run resumes from the committed state in training/small-dream
# to the end of its cosine (12000 steps), then the semi-AR fine-tune starts from the mean of its
# last four snapshots; each phase is cut at a time limit at a save. The run directories come back
# as one tarball to unpack into runs/ here, where the calibration runs (scripts/calibrate.py,
# CPU, float32, the same as the shipped models' figures).
#   run(carry=["training"], timeout_s=560): bash scripts/device/10-train-dream.sh
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 TOKENIZERS_PARALLELISM=false
U="python3 -m unmask.cli"
nvidia-smi -L
mkdir -p runs/dev
cp -r training/small-dream runs/small-dream
gpu="--device cuda --workers 4 --threads 2 --snapshots"
(time timeout ${UNIFORM_S:-330} $U train --family dream --out runs/small-dream --tasks wordy \
  --init tiny-dream --steps 12000 --lr 1e-3 $gpu) > $OUT/train-small-dream.log 2>&1
tail -n1 runs/small-dream/history.jsonl
snaps=$(ls -d runs/small-dream/snapshots/step-{10500,11000,11500,12000} 2>/dev/null)
if [ "$(echo $snaps | wc -w)" = 4 ]; then
  $U average $snaps --out runs/dev/dream-avg
  (time timeout ${SAR_S:-120} $U train --family dream --out runs/sar-dream --tasks wordy \
    --init runs/dev/dream-avg --steps 1000 --lr 3e-4 --warmup 50 --semi-ar 0.5 --save-every 250 \
    $gpu) > $OUT/train-sar-dream.log 2>&1
  tail -n1 runs/sar-dream/history.jsonl
  sar=$(ls -d runs/sar-dream/snapshots/step-{500,750,1000} 2>/dev/null)
  [ "$(echo $sar | wc -w)" = 3 ] && $U average $sar --out runs/dev/dream-sar-avg
fi
for m in runs/dev/dream-avg runs/dev/dream-sar-avg; do  # a first look; the figures are the CPU's
  [ -d $m ] || continue
  for rec in vanilla fast-dllm; do
    $U eval --model $m --recipe $rec --task wordy --dtype float32 --start 1000 --n 200 \
      --batch 100 2>&1 | tail -1 | cut -c1-400
  done
done > $OUT/evals.jsonl
cat $OUT/evals.jsonl
# What comes back: both train states (to resume) and the two means; the snapshots stay behind.
[ -d runs/dev/dream-avg ] && rm -rf runs/small-dream/snapshots
[ -d runs/dev/dream-sar-avg ] && rm -rf runs/sar-dream/snapshots
tar czf $OUT/dream-runs.tgz runs/small-dream runs/sar-dream runs/dev
ls -la $OUT
