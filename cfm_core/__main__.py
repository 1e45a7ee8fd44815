"""``python -m cfm_core COMMAND ...`` — each command lives in its own module with ``configure(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CFMError

COMMANDS = {
    "upscale": ("cfm_core.cli_upscale", "upscale images 2× or 4× with a CFM model (default: the bundled one)"),
    "train": ("cfm_core.train", "train a CFM (or baseline) model on a folder of images"),
    "evaluate": ("cfm_core.evaluate", "PSNR/SSIM/SWD of models vs bicubic on held-out images"),
    "bench": ("cfm_core.bench", "speed and memory benchmarks, ratios measured side by side"),
    "export": ("cfm_core.export", "write the EMA model of a training run at its last saved step"),
    "convert-official": ("cfm_core.convert", "convert an official fm-boosting .ckpt to safetensors, safely"),
    "info": ("cfm_core.info", "print a checkpoint's self-description"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cfm_core", description=__doc__.split("—")[0].strip())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage / error and exits
        return 2
    module_name, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m cfm_core {argv[0]}", description=help_text)
    module.configure(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except CFMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
