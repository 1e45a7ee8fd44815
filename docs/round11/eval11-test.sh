#!/bin/bash
# usage: docs/round11/eval11-test.sh CFM_RUN L2_RUN NOISE DETAIL|none — the round-11 test evaluation
# (docs/round11-selection-rule.md): bundle the chosen setting as shipped (fp16) and score it on the test sets
set -e
R=$1; L=$2; N=$3; D=$4
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128"
mkdir -p runs/ship11
$PY scripts/bundle_model.py $R/model.safetensors runs/ship11/cfm-pixel-2x.safetensors --solver euler --steps 4 --noise-step $N --noise-detail $D $X
$PY scripts/bundle_model.py $L/model.safetensors runs/ship11/regression-pixel-2x.safetensors $X
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
T="runs/data/test-gen runs/data/heldout-new"
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $T $E --model runs/ship11/cfm-pixel-2x.safetensors --out-json runs/r11/test-cfm.json > runs/r11/test-cfm.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $T $E --model runs/ship11/cfm-pixel-2x.safetensors --solvers euler --steps 1 --noise-step 0 --out-json runs/r11/test-cfm-1nfe.json > runs/r11/test-cfm-1nfe.log 2>&1) &
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate runs/data/flat-test $E --model runs/ship11/cfm-pixel-2x.safetensors --out-json runs/r11/flat-test-cfm.json > runs/r11/flat-test-cfm.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $T $E --model runs/ship11/regression-pixel-2x.safetensors --out-json runs/r11/test-l2.json > runs/r11/test-l2.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate runs/data/flat-test $E --model runs/ship11/regression-pixel-2x.safetensors --out-json runs/r11/flat-test-l2.json > runs/r11/flat-test-l2.log 2>&1) &
wait
echo done > runs/r11/test.done
