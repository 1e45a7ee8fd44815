#!/bin/bash
# round 10: can noise augmentation make the CFM win the distribution metric? Two CFM runs trained with more noise
# (steps 200 and 400) and the L2 file, equal budgets (1,200 more steps each from the round-9 files), side by side
FT="--data runs/data/train --space s2d2 --preset tiny --model-channels 32 --channel-mult 1,2,3,4 --num-res-blocks 2 --attention-resolutions none --crop 128 --batch-size 8 --threads 1 --seed 4 --precision bf16 --lr 1e-4 --lr-schedule cosine --warmup 100 --ema-start 100 --max-steps 1200 --save-every 100 --downsample box bilinear-aa bicubic-aa lanczos area --low-contrast 0.25 --soft 0.25 --quiet"
CFM="--prediction residual --weighting x1 --t-grid 8 --init-from cfm_core/weights/cfm-pixel-2x.safetensors"
.venv/bin/python -m cfm_core train $FT $CFM --noise-step 200 --out runs/r10-cfm200 > runs/r10-cfm200.log 2>&1 &
.venv/bin/python -m cfm_core train $FT $CFM --noise-step 400 --out runs/r10-cfm400 > runs/r10-cfm400.log 2>&1 &
.venv/bin/python -m cfm_core train $FT --noise-step 100 --objective l2 --init-from cfm_core/weights/regression-pixel-2x.safetensors --out runs/r10-l2 > runs/r10-l2.log 2>&1 &
wait
echo done > runs/r10/train.done
