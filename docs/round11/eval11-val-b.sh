#!/bin/bash
# round-11 validation of family B (the CFM-200 and L2 runs continued on more flat crops), as
# docs/round11-selection-rule.md states it; two processes of one thread each
set -e
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128 --dtype fp32"
$PY scripts/bundle_model.py runs/r11-cfm200/model.safetensors runs/r11/r11-b-n100.safetensors $X --solver euler --steps 4 --noise-step 100
$PY scripts/bundle_model.py runs/r11-cfm200/model.safetensors runs/r11/r11-b-n100-d1.safetensors $X --solver euler --steps 4 --noise-step 100 --noise-detail 0.0466
$PY scripts/bundle_model.py runs/r11-l2/model.safetensors runs/r11/r11-l2.safetensors $X
source docs/round11/protocol.sh
(run r11-b-n100) &
(run r11-b-n100-d1; OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r11/r11-l2.safetensors --out-json runs/r11/val-r11-l2.json > runs/r11/val-r11-l2.log 2>&1) &
wait
echo done > runs/r11/val-b.done
