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
source docs/round11/protocol.sh
(run r11-a-n100-d1; run r11-a-n100-d2) &
(run r11-a-n100-d05; run r11-a-n200-d1) &
wait
echo done > runs/r11/val-a.done
