#!/bin/bash
# round-10 validation, as docs/round10-selection-rule.md states it; two processes of one thread each
set -e
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128 --dtype fp32"
$PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/r10/r10-cfm200.safetensors --solver euler --steps 4 --noise-step 0 $X
$PY scripts/bundle_model.py runs/r10-cfm400/model.safetensors runs/r10/r10-cfm400.safetensors --solver euler --steps 4 --noise-step 0 $X
$PY scripts/bundle_model.py runs/r10-l2/model.safetensors runs/r10/r10-l2.safetensors $X
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
V="runs/data/val-gen runs/data/val-new"
F="runs/data/flat-val2 runs/data/soft-val"
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r10/r10-cfm200.safetensors --solvers euler --steps 4 --noise-step 0 100 200 --out-json runs/r10/val-cfm200.json > runs/r10/val-cfm200.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $F $E --model runs/r10/r10-cfm200.safetensors --solvers euler --steps 4 --noise-step 0 100 200 --out-json runs/r10/flat-cfm200.json > runs/r10/flat-cfm200.log 2>&1) &
(OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r10/r10-l2.safetensors --out-json runs/r10/val-l2.json > runs/r10/val-l2.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r10/r10-cfm400.safetensors --solvers euler --steps 4 --noise-step 0 200 400 --out-json runs/r10/val-cfm400.json > runs/r10/val-cfm400.log 2>&1
 OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $F $E --model runs/r10/r10-cfm400.safetensors --solvers euler --steps 4 --noise-step 0 200 400 --out-json runs/r10/flat-cfm400.json > runs/r10/flat-cfm400.log 2>&1) &
wait
$PY scripts/choose_inference_setting.py runs/r10/val-cfm200.json runs/r10/val-cfm400.json --min-gain 1.0 --flat runs/r10/flat-cfm200.json runs/r10/flat-cfm400.json --flat-tolerance 0.2 --below-swd-of runs/r10/val-l2.json > runs/r10/choice.txt 2>&1 || true
$PY scripts/choose_inference_setting.py runs/r10/val-cfm200.json runs/r10/val-cfm400.json --min-gain 1.0 --below-swd-of runs/r10/val-l2.json > runs/r10/choice-relaxed-a.txt 2>&1 || true
echo done > runs/r10/val.done
