#!/bin/bash
# usage: docs/round12/eval12-test.sh NOISE_STEP — the round-12 test evaluation (docs/round12-selection-rule.md):
# bundle the chosen setting as shipped (fp16) with the L2 file, score both on the test sets, two one-thread queues;
# ROUND=13 writes to runs/ship13 and runs/r13 instead (docs/round13/eval13-test.sh)
set -e
N=$1
R=${ROUND:-12}
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128"
mkdir -p runs/ship$R runs/r$R
$PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/ship$R/cfm-pixel-2x.safetensors $X --solver euler --steps 4 --noise-step $N --noise-detail 0.0233 --noise-contrast-gate
$PY scripts/bundle_model.py runs/r10-l2/model.safetensors runs/ship$R/regression-pixel-2x.safetensors $X
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0"
T="runs/data/test-gen runs/data/heldout-new"
ev() {  # MODEL SETS OUT DTYPE [extra]: one evaluation, one thread
  m=$1; s=$2; o=$3; d=$4; shift 4
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $s $E --dtype $d --model runs/ship$R/$m.safetensors "$@" --out-json runs/r$R/$o.json > runs/r$R/$o.log 2>&1
}
(ev cfm-pixel-2x "$T" test-cfm bfloat16
 ev cfm-pixel-2x runs/data/flat-test flat-test-cfm-fp32 float32
 ev cfm-pixel-2x "$T" test-cfm-1nfe bfloat16 --solvers euler --steps 1 --noise-step 0) &
(ev cfm-pixel-2x runs/data/flat-test flat-test-cfm bfloat16
 ev regression-pixel-2x "$T" test-l2 bfloat16
 ev regression-pixel-2x runs/data/flat-test flat-test-l2 bfloat16) &
wait
echo done > runs/r$R/test.done
