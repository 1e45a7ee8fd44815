#!/bin/bash
# round 9: fine-tune the shipped round-7 files with soft (blurred) crops, equal budgets, side by side
FT="--data runs/data/train --space s2d2 --preset tiny --model-channels 32 --channel-mult 1,2,3,4 --num-res-blocks 2 --attention-resolutions none --crop 128 --batch-size 8 --threads 1 --seed 3 --precision bf16 --lr 1e-4 --lr-schedule cosine --warmup 100 --ema-start 100 --max-steps 1200 --save-every 100 --downsample box bilinear-aa bicubic-aa lanczos area --low-contrast 0.25 --soft 0.25 --quiet"
.venv/bin/python -m cfm_core train $FT --noise-step 50 --prediction residual --weighting x1 --t-grid 8 --init-from cfm_core/weights/cfm-pixel-2x.safetensors --out runs/r9-cfm > runs/r9-cfm.log 2>&1 &
.venv/bin/python -m cfm_core train $FT --noise-step 100 --objective l2 --init-from cfm_core/weights/regression-pixel-2x.safetensors --out runs/r9-l2 > runs/r9-l2.log 2>&1 &
wait
echo done > runs/r9/train.done
