#!/bin/bash
set -e
PY=.venv/bin/python
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
V="runs/data/val-gen runs/data/val-new"
F="runs/data/flat-val2 runs/data/soft-val"
M="--model runs/r10/r10-cfm200.safetensors --solvers euler --steps 4"
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E $M --noise-step 25 50 --out-json runs/r10b/val-cfm200.json > runs/r10b/val.log 2>&1) &
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $F $E $M --noise-step 25 50 --out-json runs/r10b/flat-cfm200.json > runs/r10b/flat.log 2>&1) &
wait
$PY scripts/choose_inference_setting.py runs/r10b/val-cfm200.json --min-gain 1.0 --flat runs/r10b/flat-cfm200.json --flat-tolerance 0.2 --below-swd-of runs/r10/val-l2.json > runs/r10b/choice.txt 2>&1 || true
$PY scripts/choose_inference_setting.py runs/r10b/val-cfm200.json --min-gain 1.0 --below-swd-of runs/r10/val-l2.json > runs/r10b/choice-relaxed-a.txt 2>&1 || true
echo done > runs/r10b/val.done
