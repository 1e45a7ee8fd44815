# the round-11 validation protocol (docs/round11-selection-rule.md), sourced by the evaluation scripts
E="--crop 256 --downsample box bilinear-aa bicubic-aa lanczos --baselines bicubic --swd-patches 1024 --seed 0 --dtype bfloat16"
V="runs/data/val-gen runs/data/val-new"
F="runs/data/flat-val2 runs/data/soft-val"
run() {  # NAME: validation and flat images of runs/r11/NAME.safetensors, one thread
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $V $E --model runs/r11/$1.safetensors --out-json runs/r11/val-$1.json > runs/r11/val-$1.log 2>&1
  OMP_NUM_THREADS=1 $PY -m cfm_core evaluate $F $E --model runs/r11/$1.safetensors --out-json runs/r11/flat-$1.json > runs/r11/flat-$1.log 2>&1
}
