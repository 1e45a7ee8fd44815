#!/bin/bash
# usage: runs/eval10-test.sh RUN NOISE — the round-10 test evaluation (docs/round10-selection-rule.md)
set -e
R=$1; N=$2
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128"
mkdir -p runs/ship10
$PY scripts/bundle_model.py $R/model.safetensors runs/ship10/cfm-pixel-2x.safetensors --solver euler --steps 4 --noise-step $N $X
$PY scripts/bundle_model.py runs/r10-l2/model.safetensors runs/ship10/regression-pixel-2x.safetensors $X
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
T="runs/data/test-gen runs/data/heldout-new"
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $T $E --model runs/ship10/cfm-pixel-2x.safetensors --solvers euler --steps 4 --noise-step $N --out-json runs/r10/test-cfm.json > runs/r10/test-cfm.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $T $E --model runs/ship10/cfm-pixel-2x.safetensors --solvers euler --steps 1 --noise-step 0 --out-json runs/r10/test-cfm-1nfe.json > runs/r10/test-cfm-1nfe.log 2>&1) &
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate runs/data/flat-test $E --model runs/ship10/cfm-pixel-2x.safetensors --out-json runs/r10/flat-test-cfm.json > runs/r10/flat-test-cfm.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $T $E --model runs/ship10/regression-pixel-2x.safetensors --out-json runs/r10/test-l2.json > runs/r10/test-l2.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate runs/data/flat-test $E --model runs/ship10/regression-pixel-2x.safetensors --out-json runs/r10/flat-test-l2.json > runs/r10/flat-test-l2.log 2>&1) &
wait
echo done > runs/r10/test.done
