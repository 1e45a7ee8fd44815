"""Issue 16's independent check, run as a user would: 8-bit low-res files in, `python -m cfm_core upscale` out.

For every high-res image: centre crop (``--crop``), make the low-res image with ``--kernel`` (default ``box``, the
official code's), save it as an 8-bit PNG, upscale the whole folder with one ``python -m cfm_core upscale LR -o OUT``
call (plus ``--cli-args``; none = the shipped defaults), read the 8-bit outputs back and score them against the
high-res crops, beside bicubic of the same 8-bit files (quantised to 8 bits like the CLI's output). Prints one line
per image and the means: PSNR gain over bicubic and SWD as a ratio of bicubic's (issue 16's bar: ≥ +1.0 dB and
≤ 0.5×), and the CLI's wall time.

usage: python scripts/cli_check.py HR_DIR [HR_DIR ...] [--kernel box] [--crop 256] [--swd-patches 1024]
       [--cli-args "--dtype fp32"] [--out-json J]
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import torch

from cfm_core.evaluate.evaluate import baseline_upscale, downsample, prepare_high_res
from cfm_core.evaluate.metrics import psnr, swd
from cfm_core.images import list_images, load_image, save_image


def quantise(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round() / 255


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders of high-res images")
    p.add_argument("--kernel", default="box", help="how the low-res files are made (default box)")
    p.add_argument("--crop", type=int, default=256, help="centre crop of each high-res image (default 256)")
    p.add_argument("--swd-patches", type=int, default=1024, help="SWD patches per image and level (default 1024)")
    p.add_argument("--cli-args", default="", help="extra flags for `cfm_core upscale` (default: none)")
    p.add_argument("--out-json", default=None, help="write the per-image figures here")
    a = p.parse_args(argv)
    paths = [path for folder in a.folders for path in list_images(folder)]
    with tempfile.TemporaryDirectory() as tmp:
        low_dir, out_dir = os.path.join(tmp, "low"), os.path.join(tmp, "out")
        os.makedirs(low_dir)
        names, highs = [], []
        for i, path in enumerate(paths):
            high = prepare_high_res(load_image(path, keep_alpha=False).rgb, 16, a.crop)
            name = f"{i:03d}_{os.path.splitext(os.path.basename(path))[0]}"
            save_image(os.path.join(low_dir, name + ".png"), downsample(high, 2, a.kernel))
            names.append(name)
            highs.append(high)
        cmd = [sys.executable, "-m", "cfm_core", "upscale", low_dir, "-o", out_dir, "--quiet",
               *shlex.split(a.cli_args)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            print(f"error: {' '.join(cmd)} failed: {done.stderr.strip()}", file=sys.stderr)
            return 2
        cfm, bicubic = [], []
        for name in names:
            low = load_image(os.path.join(low_dir, name + ".png"), keep_alpha=False).rgb
            bicubic.append(quantise(baseline_upscale(low[None], 2, "bicubic")[0]))
            cfm.append(load_image(os.path.join(out_dir, name + "_x2.png"), keep_alpha=False).rgb)
    rows = []
    for name, high, b, c in zip(names, highs, bicubic, cfm):
        rows.append({"image": name, "bicubic_psnr": psnr(b, high), "cfm_psnr": psnr(c, high)})
        print(f"{name:40s} bicubic {rows[-1]['bicubic_psnr']:6.2f} dB  CFM {rows[-1]['cfm_psnr']:6.2f} dB  "
              f"gain {rows[-1]['cfm_psnr'] - rows[-1]['bicubic_psnr']:+.2f}")
    kwargs = {"patches_per_image": a.swd_patches, "seed": 0}
    swd_b, swd_c = swd(highs, bicubic, **kwargs).average, swd(highs, cfm, **kwargs).average
    n, wins = len(rows), sum(r["cfm_psnr"] > r["bicubic_psnr"] for r in rows)
    mean_b = sum(r["bicubic_psnr"] for r in rows) / n
    mean_c = sum(r["cfm_psnr"] for r in rows) / n
    print(f"{n} images, kernel {a.kernel}, CLI flags {a.cli_args or '(defaults)'}: PSNR bicubic {mean_b:.2f} dB, "
          f"CFM {mean_c:.2f} dB (gain {mean_c - mean_b:+.2f}; bar ≥ +1.00); SWD bicubic {swd_b:.2f}, CFM {swd_c:.2f} "
          f"(ratio {swd_c / swd_b:.2f}; bar ≤ 0.50); images with a gain: {wins}/{n}; CLI wall time "
          f"{seconds:.1f} s")
    if a.out_json:
        with open(a.out_json, "w", encoding="utf-8") as fh:
            json.dump({"kernel": a.kernel, "crop": a.crop, "cli_args": a.cli_args, "seconds": seconds,
                       "swd": {"bicubic": swd_b, "cfm": swd_c}, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
