#!/bin/bash
# usage: docs/round13/eval13-test.sh NOISE_STEP — the round-13 test evaluation (docs/round13-selection-rule.md):
# round 12's script, unchanged, writing to runs/ship13 and runs/r13
ROUND=13 exec bash docs/round12/eval12-test.sh "$@"
