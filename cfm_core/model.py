"""A CFM model: the velocity UNet plus everything needed to run it (its self-description)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .augment import DEFAULT_NOISE_STEP, alpha_bar, detail_noise_steps
from .autoencoders import LatentSpec
from .contrast import contrast
from .errors import CFMError
from .path import check_objective, check_prediction, output_to_velocity
from .solvers import ENDPOINT_SOLVERS, check_solver, check_steps
from .unet import UNetConfig, VelocityUNet


def _check_positive_or_null(name: str, value, null_means: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or
                              not math.isfinite(value) or value <= 0):
        raise CFMError(f"{name}={value!r} must be a positive number (or null: {null_means})")


@dataclass(frozen=True)
class CFMConfig:
    """Everything a checkpoint says about itself. Stored as JSON in the safetensors metadata."""

    unet: UNetConfig
    latent: LatentSpec
    factor: int = 2
    noise_step: int = DEFAULT_NOISE_STEP
    objective: str = "cfm"
    sigma_min: float = 0.0
    default_solver: str = "euler"
    default_steps: int = 4
    upsample: str = "psu"
    prediction: str = "velocity"  # what the network outputs: velocity (official) or residual (x̂1 − z_up)
    contrast_reference: float | None = None  # pixel-space models: flatter inputs are normalised up to it (contrast.py)
    noise_detail: float | None = None  # detail-adaptive noise: less noise where local detail is below it (augment.py)
    noise_contrast_gate: bool = False  # detail-adaptive noise × min(1, contrast / contrast_reference)²
    training: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_objective(self.objective)
        check_prediction(self.prediction)
        alpha_bar(self.noise_step)
        try:  # a checkpoint's defaults are used when the user sets nothing: refuse broken ones when the file opens
            check_solver(self.default_solver)
            check_steps(self.default_steps)
        except CFMError as exc:
            raise CFMError(f"the model's default {exc}") from None
        if not isinstance(self.sigma_min, (int, float)) or not 0 <= self.sigma_min < 1:
            raise CFMError(f"sigma_min={self.sigma_min!r} must be a number in [0, 1)")
        if not isinstance(self.upsample, str) or not isinstance(self.training, dict):
            raise CFMError("upsample must be a string and training a dict of notes")
        spec = self.latent
        for name in ("channels", "downscale"):
            value = getattr(spec, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise CFMError(f"latent {name}={value!r} must be an integer in [1, 1024]")
        for name in ("scale_factor", "shift_factor"):
            value = getattr(spec, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                    (name == "scale_factor" and value == 0):
                raise CFMError(f"latent {name}={value!r} must be a finite number" +
                               (" other than 0" if name == "scale_factor" else ""))
        if self.factor not in (2, 4):
            raise CFMError(f"upscale factor={self.factor} is unsupported; use 2 (or 4)")
        _check_positive_or_null("contrast_reference", self.contrast_reference, "off")
        _check_positive_or_null("noise_detail", self.noise_detail, "the same noise everywhere")
        if self.contrast_reference is not None and spec.kind not in ("pixels", "space_to_depth"):
            raise CFMError(f"contrast_reference applies to pixel-space models only, not to {spec.name!r} latents")
        if not isinstance(self.noise_contrast_gate, bool) or (self.noise_contrast_gate and (
                self.noise_detail is None or self.contrast_reference is None)):
            raise CFMError("noise_contrast_gate must be true or false, and true only with noise_detail and "
                           "contrast_reference")
        if self.unet.latent_channels != self.latent.channels:
            raise CFMError(f"UNet latent_channels={self.unet.latent_channels} differs from the latent space's "
                           f"{self.latent.channels} channels")

    def noise_steps(self, z_up: torch.Tensor, noise_step: int | None = None) -> int | torch.Tensor:
        """The noise step a solve from the clean ``z_up`` (caller's units) takes: ``noise_step``, else the model's;
        a per-pixel map when the model is detail-adaptive (``noise_detail``, augment.py) and the step is above 0;
        with ``noise_contrast_gate`` the map of each sample is scaled by min(1, σ_b / contrast_reference)², σ_b its
        contrast (contrast.py), so images that contrast normalisation lifts get (almost) no noise."""
        step = self.noise_step if noise_step is None else noise_step
        if self.objective != "cfm" or self.noise_detail is None or step == 0:
            return step
        steps = detail_noise_steps(z_up, step, self.noise_detail)  # refuses a bad step as noise_augment would
        if self.noise_contrast_gate:
            ratio = (contrast(z_up) / self.contrast_reference).clamp(max=1.0)
            steps = steps * ratio.pow(2).reshape(-1, 1, 1, 1)
        return steps

    def solve_plan(self, solver: str | None = None, steps: int | None = None) -> tuple[str, int]:
        """The solver and step count a run takes: the model's defaults where ``None``; regression models (the
        paper's L1/L2 baselines, a one-step map) take one Euler step whatever is asked."""
        if self.objective in ("l1", "l2"):
            return "euler", 1
        return solver or self.default_solver, self.default_steps if steps is None else steps

    def solver_caveat(self, solver: str) -> str | None:
        """A one-line warning when ``solver`` suits this model badly, else None. A residual-prediction model knows
        x̂1, not x̂0, so at t = 1 its velocity (x̂1 − x_t)/(1 − t) is 0/0 (floored to ≈ 0): heun and rk4, whose last
        stage evaluates there, then lose most of their last step (on the bundled model at 4 NFE: heun 24.7 dB, rk4
        26.7 dB against Euler's 31.0; they converge only with many steps)."""
        if self.prediction == "residual" and self.objective == "cfm" and solver in ENDPOINT_SOLVERS:
            return (f"solver {solver} evaluates the velocity at t = 1, where this residual-prediction model gives "
                    "none: expect a worse image than euler or midpoint at the same NFE unless steps are many")
        return None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"], d["latent"] = self.unet.to_dict(), self.latent.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CFMConfig:
        if not isinstance(d, dict) or not isinstance(d.get("unet"), dict) or not isinstance(d.get("latent"), dict):
            raise CFMError(f"a CFM config is a JSON object with 'unet' and 'latent' objects, got {str(d)[:80]!r}")
        d = dict(d)
        d["unet"] = UNetConfig.from_dict(d["unet"])
        d["latent"] = LatentSpec.from_dict(d["latent"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class CFMModel(nn.Module):
    """``model(x_t, t, z_up) -> v`` on model-space latents, with ``model.config`` attached."""

    def __init__(self, config: CFMConfig):
        super().__init__()
        self.config = config
        self.net = VelocityUNet(config.unet)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def check_latent(self, z: torch.Tensor, name: str = "latent") -> None:
        """One-line errors for the inputs users get wrong."""
        c = self.config.latent.channels
        if z.ndim != 4:
            raise CFMError(f"{name} must be a 4-D [B, C, H, W] tensor, got shape {tuple(z.shape)}")
        if z.shape[0] == 0:
            raise CFMError(f"{name} is an empty batch; pass at least one latent")
        if min(z.shape[-2:]) == 0:
            raise CFMError(f"{name} of shape {tuple(z.shape)} is empty; pass a latent of some size")
        if not z.is_floating_point():
            raise CFMError(f"{name} is a {str(z.dtype).replace('torch.', '')} tensor; latents are floating point")
        if z.shape[1] != c:
            raise CFMError(f"{name} has {z.shape[1]} channels but this CFM model expects {c} "
                           f"({self.config.latent.name}); use a CFM model trained for this latent space")
        if not torch.isfinite(z).all():
            raise CFMError(f"{name} contains NaN or inf values; check the sampler/VAE that produced it")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, z_up: torch.Tensor) -> torch.Tensor:
        if x_t.shape != z_up.shape:
            raise CFMError(f"x_t {tuple(x_t.shape)} and z_up {tuple(z_up.shape)} must have the same shape")
        c = self.config.latent.channels
        if x_t.ndim != 4 or x_t.shape[1] != c:
            raise CFMError(f"x_t and z_up have shape {tuple(x_t.shape)} but this CFM model takes [B, {c}, H, W] "
                           f"({self.config.latent.name}) latents; use a model trained for this latent space")
        if isinstance(t, torch.Tensor) and t.numel() not in (1, x_t.shape[0]):
            raise CFMError(f"t has {t.numel()} values for a batch of {x_t.shape[0]}; pass one t or one per sample")
        # the network's body runs in the model's dtype, its first and last convolutions in float32 (unet.py); the
        # velocity is formed from the caller's x_t and z_up (float32 in boost), so a bf16/fp16 model does not also
        # round the latents it adds its output to
        out = self.net(x_t.float(), t, z_up.float())
        cfg = self.config
        v = output_to_velocity(out, x_t, t, z_up, cfg.prediction, cfg.sigma_min).to(x_t.dtype)
        check_finite_output(v, self.dtype)
        return v


def check_finite_output(v: torch.Tensor, dtype: torch.dtype) -> None:
    """NaN/inf from the network is an error, never an image (NaN pixels save as black)."""
    if not torch.isfinite(v).all():
        name = str(dtype).replace("torch.", "")
        raise CFMError(f"the CFM model produced NaN or inf values running in {name}; try fp32 (--dtype fp32, or "
                       "dtype fp32 in CFMLoader), and if that does not help the model file is damaged")
