#!/bin/bash
# the round-13 report on fresh images (docs/round13-selection-rule.md): the chosen setting, its L2 file and round 9's
# shipped file (git show HEAD~:cfm_core/weights/...) on runs/data/fresh-art, bf16, two one-thread queues
set -e
PY=.venv/bin/python
mkdir -p runs/r13 runs/ship9
for f in cfm-pixel-2x regression-pixel-2x; do git show 517ae15:cfm_core/weights/$f.safetensors > runs/ship9/$f.safetensors; done
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
ev() {  # MODEL OUT: one evaluation on fresh-art, one thread
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate runs/data/fresh-art $E --model $1 --out-json runs/r13/$2.json > runs/r13/$2.log 2>&1
}
(ev runs/ship13/cfm-pixel-2x.safetensors fresh-cfm; ev runs/ship9/cfm-pixel-2x.safetensors fresh-r9-cfm) &
(ev runs/ship13/regression-pixel-2x.safetensors fresh-l2; ev runs/ship9/regression-pixel-2x.safetensors fresh-r9-l2) &
wait
echo done > runs/r13/fresh.done
