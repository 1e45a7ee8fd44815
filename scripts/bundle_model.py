"""Copy a trained model with chosen inference defaults, in fp16, e.g. into cfm_core/weights/.

usage: python scripts/bundle_model.py RUN/model.safetensors OUT.safetensors [--solver euler] [--steps 2]
       [--noise-step N] [--dtype fp16]
The training summary keeps the noise step the model was trained with (``training.noise_step_trained``).
"""
import argparse
import dataclasses

from cfm_core import load_model
from cfm_core.train import export_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--solver", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--noise-step", type=int, default=None)
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    a = p.parse_args()
    src = load_model(a.src)
    cfg = src.config
    training = dict(cfg.training, noise_step_trained=cfg.training.get("noise_step_trained", cfg.noise_step))
    cfg = dataclasses.replace(cfg, default_solver=a.solver or cfg.default_solver,
                              default_steps=a.steps or cfg.default_steps,
                              noise_step=cfg.noise_step if a.noise_step is None else a.noise_step)
    export_model(src.net.state_dict(), cfg, a.dst, a.dtype, training)
    print(f"wrote {a.dst}: solver {cfg.default_solver}, steps {cfg.default_steps}, noise step {cfg.noise_step}")


if __name__ == "__main__":
    main()
