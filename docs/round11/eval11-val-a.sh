#!/bin/bash
# round-11 validation of family A (detail-adaptive noise on the round-10 CFM-200 file), as
# docs/round11-selection-rule.md states it; two processes of one thread each
set -e
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128 --dtype fp32 --solver euler --steps 4"
SRC=runs/r10-cfm200/model.safetensors
$PY scripts/bundle_model.py $SRC runs/r11/r11-a-n100-d05.safetensors $X --noise-step 100 --noise-detail 0.0233
$PY scripts/bundle_model.py $SRC runs/r11/r11-a-n100-d1.safetensors $X --noise-step 100 --noise-detail 0.0466
$PY scripts/bundle_model.py $SRC runs/r11/r11-a-n100-d2.safetensors $X --noise-step 100 --noise-detail 0.0932
$PY scripts/bundle_model.py $SRC runs/r11/r11-a-n200-d1.safetensors $X --noise-step 200 --noise-detail 0.0466
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
V="runs/data/val-gen runs/data/val-new"
F="runs/data/flat-val2 runs/data/soft-val"
run() {  # NAME
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r11/$1.safetensors --out-json runs/r11/val-$1.json > runs/r11/val-$1.log 2>&1
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $F $E --model runs/r11/$1.safetensors --out-json runs/r11/flat-$1.json > runs/r11/flat-$1.log 2>&1
}
(run r11-a-n100-d1; run r11-a-n100-d2) &
(run r11-a-n100-d05; run r11-a-n200-d1) &
wait
echo done > runs/r11/val-a.done
