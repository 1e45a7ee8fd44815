#!/bin/bash
# round-11 validation of family B (the CFM-200 and L2 runs continued on more flat crops), as
# docs/round11-selection-rule.md states it; two processes of one thread each
set -e
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128 --dtype fp32"
$PY scripts/bundle_model.py runs/r11-cfm200/model.safetensors runs/r11/r11-b-n100.safetensors $X --solver euler --steps 4 --noise-step 100
$PY scripts/bundle_model.py runs/r11-cfm200/model.safetensors runs/r11/r11-b-n100-d1.safetensors $X --solver euler --steps 4 --noise-step 100 --noise-detail 0.0466
$PY scripts/bundle_model.py runs/r11-l2/model.safetensors runs/r11/r11-l2.safetensors $X
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
V="runs/data/val-gen runs/data/val-new"
F="runs/data/flat-val2 runs/data/soft-val"
run() {  # NAME
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r11/$1.safetensors --out-json runs/r11/val-$1.json > runs/r11/val-$1.log 2>&1
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $F $E --model runs/r11/$1.safetensors --out-json runs/r11/flat-$1.json > runs/r11/flat-$1.log 2>&1
}
(run r11-b-n100) &
(run r11-b-n100-d1; OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r11/r11-l2.safetensors --out-json runs/r11/val-r11-l2.json > runs/r11/val-r11-l2.log 2>&1) &
wait
echo done > runs/r11/val-b.done
