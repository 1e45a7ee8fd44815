#!/bin/bash
# the round-13 rule (docs/round13-selection-rule.md) on round 12's validation results (docs/round12/json)
PY=.venv/bin/python
J=docs/round12/json
C="r12-n125g r12-n150g r12-n175g r12-n200g"
val=(); v2=(); sf=()
for c in $C; do val+=($J/val-$c.json); v2+=($J/flatv2-$c.json); sf+=($J/softflat-$c.json); done
$PY scripts/choose_inference_setting.py "${val[@]}" --min-gain 1.2 --flat "${v2[@]}" --flat "${sf[@]}" --flat-mean \
  --flat-tolerance 0.2 --below-swd-of $J/val-r12-l2.json --min-swd-margin 0.2 --prefer flat
