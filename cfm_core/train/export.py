"""``python -m cfm_core export RUN_DIR OUT.safetensors``: the EMA (or online) weights of a training run, at the step
it last saved, as a self-describing model — to evaluate or ship a checkpoint while the run keeps going."""
from __future__ import annotations

import argparse
import json
import os

from ..checkpoint import check_destination
from ..errors import CFMError
from .train import LOG_FILE, STATE_FILE, _load_state, _state_config, export_model


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help=f"training run folder (holds {STATE_FILE}) or the {STATE_FILE} file itself")
    parser.add_argument("dst", help="output .safetensors")
    parser.add_argument("--online", action="store_true", help="export the online weights instead of the EMA ones")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists (never the run's own "
                        "state or log)")


def run(args: argparse.Namespace) -> int:
    path = os.path.join(args.run, STATE_FILE) if os.path.isdir(args.run) else args.run
    if not os.path.isfile(path):
        raise CFMError(f"run {args.run!r} holds no {STATE_FILE}; pass the --out folder of a training run")
    run_files = (path, os.path.join(os.path.dirname(path), LOG_FILE))
    check_destination(args.dst, overwrite=args.overwrite, inputs=run_files)
    state = _load_state(path)
    config = _state_config(state, path)
    try:
        run_args = json.loads(state.get("args", "{}"))
    except (TypeError, ValueError):
        run_args = {}
    run_args = run_args if isinstance(run_args, dict) else {}
    elapsed = state.get("elapsed", 0.0)
    summary = {"steps": int(state["step"]), "seconds": round(float(elapsed), 1) if isinstance(elapsed, (int, float))
               else None,
               "objective": config.objective, "lr": run_args.get("lr"), "seed": run_args.get("seed"),
               "exported_from": "online" if args.online else "ema"}
    weights = state["net"] if args.online else state["ema"]
    export_model(weights, config, args.dst, args.dtype, summary, overwrite=args.overwrite)
    print(f"wrote {args.dst}: step {state['step']} ({summary['exported_from']} weights)")
    return 0

