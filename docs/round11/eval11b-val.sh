#!/bin/bash
# round-11b validation (docs/round11-selection-rule.md, addendum): higher top noise steps for adaptive noise
set -e
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128 --dtype fp32 --solver euler --steps 4"
$PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/r11/r11b-a-n150-d05.safetensors $X --noise-step 150 --noise-detail 0.0233
$PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/r11/r11b-a-n150-d1.safetensors $X --noise-step 150 --noise-detail 0.0466
$PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/r11/r11b-a-n175-d1.safetensors $X --noise-step 175 --noise-detail 0.0466
$PY scripts/bundle_model.py runs/r11-cfm200/model.safetensors runs/r11/r11b-b-n150-d1.safetensors $X --noise-step 150 --noise-detail 0.0466
source docs/round11/protocol.sh
(run r11b-a-n150-d1; run r11b-a-n175-d1) &
(run r11b-a-n150-d05; run r11b-b-n150-d1) &
wait
echo done > runs/r11/val-11b.done
