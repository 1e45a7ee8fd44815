"""Make a tiny latent CFM model for an SD1.x VAE with the pack's own trainer, for end-to-end checks in ComfyUI.

The model is barely trained (a few steps of the ``tiny`` preset): its pictures are meaningless, but it carries the
VAE's real latent spec (4 channels, /8, scale 0.18215, weight fingerprint), so CFMLoader/CFMBoost accept it with
exactly that VAE and refuse it with any other — which is what workflow and acceptance tests need.

The VAE can be a VAE file, or the VAE baked into a single-file SD checkpoint: the trainer reads only the
checkpoint's ``first_stage_model.*`` tensors itself (``--vae`` accepts full checkpoints).

usage (repository root):
    .venv/bin/python scripts/make_sd15_test_cfm.py \
        --checkpoint ~/comfy/ComfyUI/models/checkpoints/sd15_random.safetensors \
        --export ~/comfy/ComfyUI/models/cfm/cfm-sd15-2x.safetensors
    .venv/bin/python scripts/make_sd15_test_cfm.py --vae ~/comfy/ComfyUI/models/vae/sd15_random_vae.safetensors \
        --export ~/comfy/ComfyUI/models/cfm/cfm-sd15-othervae-2x.safetensors
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--vae", help="an SD-style VAE .safetensors file (diffusers or LDM keys)")
    src.add_argument("--checkpoint", help="a single-file SD checkpoint whose VAE to use")
    ap.add_argument("--export", required=True, help="the CFM model to write (.safetensors)")
    ap.add_argument("--vae-name", default="sd15")
    ap.add_argument("--data", default=str(ROOT / "runs" / "data" / "train"), help="training images")
    ap.add_argument("--run-dir", help="the trainer's run folder (default: a temporary folder)")
    ap.add_argument("--max-steps", type=int, default=5)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    started = time.perf_counter()
    vae = args.vae or args.checkpoint
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="cfm_sd15_run_")
    Path(args.export).parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cfm_core", "train", "--data", args.data, "--space", "vae", "--vae", vae,
           "--vae-name", args.vae_name, "--vae-family", "sd15", "--preset", "tiny", "--crop", str(args.crop),
           "--batch-size", "2", "--cache-size", "4", "--max-steps", str(args.max_steps), "--warmup", "1",
           "--threads", str(args.threads), "--quiet", "--out", run_dir, "--export", args.export]
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    print(f"exit {rc}; {args.export} after {time.perf_counter() - started:.1f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
