#!/bin/bash
# round-11c validation (docs/round11-selection-rule.md, addendum 11c): contrast-gated adaptive noise
set -e
PY=.venv/bin/python
X="--contrast-reference-from runs/data/train --crop 128 --dtype fp32 --solver euler --steps 4 --noise-detail 0.0233 --noise-contrast-gate"
$PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/r11/r11c-a-n100-d05g.safetensors $X --noise-step 100
$PY scripts/bundle_model.py runs/r10-cfm200/model.safetensors runs/r11/r11c-a-n150-d05g.safetensors $X --noise-step 150
source docs/round11/protocol.sh
(run r11c-a-n100-d05g) &
(run r11c-a-n150-d05g) &
wait
echo done > runs/r11/val-11c.done
