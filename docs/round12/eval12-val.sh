#!/bin/bash
# round-12 validation (docs/round12-selection-rule.md): bundle the candidates and the L2 reference, evaluate each on
# the validation images and on each low-contrast set, two one-thread queues
set -e
PY=.venv/bin/python
mkdir -p runs/r12
X="--contrast-reference-from runs/data/train --crop 128 --dtype fp32"
G="$X --solver euler --steps 4 --noise-detail 0.0233 --noise-contrast-gate"
for n in 125 150 175 200; do
  $PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/r12/r12-n${n}g.safetensors $G --noise-step $n
done
$PY scripts/bundle_model.py runs/r10-l2/model.safetensors runs/r12/r12-l2.safetensors $X
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
ev() {  # NAME SET OUT: one evaluation, one thread
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $2 $E --model runs/r12/$1.safetensors --out-json runs/r12/$3-$1.json > runs/r12/$3-$1.log 2>&1
}
V="runs/data/val-gen runs/data/val-new"
(ev r12-l2 "$V" val; for n in 125 175; do ev r12-n${n}g "$V" val; ev r12-n${n}g runs/data/flat-val2 flatv2; ev r12-n${n}g runs/data/softflat-val softflat; done) &
(for n in 150 200; do ev r12-n${n}g "$V" val; ev r12-n${n}g runs/data/flat-val2 flatv2; ev r12-n${n}g runs/data/softflat-val softflat; done) &
wait
echo done > runs/r12/val.done
