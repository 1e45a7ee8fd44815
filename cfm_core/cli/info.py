"""``python -m cfm_core info MODEL``: print what a checkpoint says about itself."""
from __future__ import annotations

import argparse
import json

import torch

from ..checkpoint import read_config
from ..unet import VelocityUNet, count_parameters


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a CFM .safetensors file")


def run(args: argparse.Namespace) -> int:
    config = read_config(args.model)
    info = config.to_dict()
    with torch.device("meta"):  # count without allocating (a 306M model would take seconds and 1.2 GB)
        info["parameters"] = count_parameters(VelocityUNet(config.unet))
    print(json.dumps(info, indent=2))
    return 0
