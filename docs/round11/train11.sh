#!/bin/bash
# round 11a: the round-10 CFM-200 and L2 runs continued with a larger share of faded and blurred crops (so the
# noise-augmented CFM learns to add no texture to flat images), equal budgets: 1,200 more steps each, side by side
FT="--data runs/data/train --space s2d2 --preset tiny --model-channels 32 --channel-mult 1,2,3,4 --num-res-blocks 2 --attention-resolutions none --crop 128 --batch-size 8 --threads 1 --seed 5 --precision bf16 --lr 1e-4 --lr-schedule cosine --warmup 100 --ema-start 100 --max-steps 1200 --save-every 100 --downsample box bilinear-aa bicubic-aa lanczos area --low-contrast 0.5 --soft 0.4 --quiet"
CFM="--prediction residual --weighting x1 --t-grid 8 --init-from runs/r10-cfm200/model.safetensors"
.venv/bin/python -m cfm_core train $FT $CFM --noise-step 200 --out runs/r11-cfm200 > runs/r11-cfm200.log 2>&1 &
.venv/bin/python -m cfm_core train $FT --noise-step 100 --objective l2 --init-from runs/r10-l2/model.safetensors --out runs/r11-l2 > runs/r11-l2.log 2>&1 &
wait
echo done > runs/r11/train.done
