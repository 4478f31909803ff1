#!/usr/bin/env bash
# The issue acceptance benches, as commands: each prints its table and writes JSON + plots under
# runs/bench/<tag>/. Usage: scripts/acceptance.sh MODEL TAG [N]   (MODEL: tiny-llada or a dir)
# Example: scripts/acceptance.sh tiny-llada llada 200
set -euo pipefail
model=${1:?model}; tag=${2:?tag}; n=${3:-200}
out=runs/bench/$tag; mkdir -p "$out"
u=".venv/bin/unmask"
family=llada; [[ "$tag" == *dream* ]] && family=dream

# issue 3: the threshold trade-off (no cache), same problems
$u bench --model "$model" --task arith --n "$n" --json "$out/tau.json" --plot "$out/tau.png" \
  --recipes "vanilla,vanilla+unmask=threshold:tau=0.9,vanilla+unmask=threshold:tau=0.7,vanilla+unmask=threshold:tau=0.5,vanilla+unmask=threshold:tau=0.3"
# issue 5: baselines, and EOS exit's answer identity (records compared afterwards)
$u bench --model "$model" --task arith --n "$n" --json "$out/baselines.json" \
  --plot "$out/baselines.png" --records "$out/baselines.records.jsonl" \
  --recipes vanilla,fast-dllm,fast-dllm-prefix,dkv-cache,dllm-cache,fast-dllm+eos_exit=true
# issue 6: Dynamic-dLLM
$u bench --model "$model" --task arith --n "$n" --json "$out/dynamic.json" \
  --plot "$out/dynamic.png" --recipes vanilla,fast-dllm,dynamic-dllm-dcu,dynamic-dllm
# issue 7: CadLLM and its ablations
if [[ $family == llada ]]; then
  cad_recipes=vanilla,fast-dllm,cadllm,cadllm-no-block,cadllm-no-steps,cadllm-no-vocab,cadllm-no-threshold
else
  cad_recipes=vanilla,fast-dllm,cadllm-dream
fi
$u bench --model "$model" --task arith --n "$n" --json "$out/cadllm.json" \
  --plot "$out/cadllm.png" --recipes "$cad_recipes"
