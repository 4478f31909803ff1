#!/bin/bash
# Run as-is on the lent GPU machine in session 3: per-operator profile of one decode, 8B width, 8 layers.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 40 python3 scripts/scale_check.py --family llada --layers 8 --out /tmp/l8 > /dev/null
for r in vanilla fast-dllm; do timeout 50 python3 scripts/profile_recipe.py --model /tmp/l8 --recipe $r --shots 8 --rows 14 2>&1 | grep -v USDT | cut -c1-57,110-175 > $OUT/prof-$r.txt; head -1 $OUT/prof-$r.txt; done
