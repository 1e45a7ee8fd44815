#!/bin/bash
# the round-12 rule (docs/round12-selection-rule.md) on the validation results of docs/round12/eval12-val.sh
PY=.venv/bin/python
C="r12-n125g r12-n150g r12-n175g r12-n200g"
val=(); v2=(); sf=()
for c in $C; do val+=(runs/r12/val-$c.json); v2+=(runs/r12/flatv2-$c.json); sf+=(runs/r12/softflat-$c.json); done
$PY scripts/choose_inference_setting.py "${val[@]}" --min-gain 1.0 --flat "${v2[@]}" --flat "${sf[@]}" --flat-mean \
  --flat-tolerance 0.2 --below-swd-of runs/r12/val-r12-l2.json --min-swd-margin 0.2 --prefer flat
