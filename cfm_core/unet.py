"""The velocity network: an ADM-style UNet with scale-shift norm, conditioned by channel concatenation.

``v = net(x_t, t, z_up)`` evaluates ``UNet(cat[x_t, z_up])`` with ``in = 2·C`` and ``out = C`` channels, where
``z_up`` is the *clean* upsampled low-resolution latent. Parameter names follow the official
``EfficientUNet`` (guided-diffusion layout), so official weights load without renaming.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import CFMError

ATTENTION_LAYOUTS = ("sdpa", "official")


# Plausibility bounds for the architecture a file or flag declares, far above any real model (the paper's largest
# has 128 channels, ×8, 3 blocks): a checkpoint's config is read before its tensors, and a hostile one asking for
# 10⁹ blocks must be refused, not built.
MAX_LEVELS = 12
MAX_MULT = 64
_INT_RANGES = {"latent_channels": (1, 1024), "model_channels": (1, 16384), "num_res_blocks": (0, 64),
               "num_heads": (1, 1024), "dim_head": (1, 4096), "norm_groups": (1, 1024)}


def _int_in(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CFMError(f"UNet {name}={value!r} must be an integer in [{low}, {high}]")
    return value


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the velocity UNet. ``attention_resolutions`` are downsample factors (1, 2, 4, ...)."""

    latent_channels: int = 4
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (8,)
    num_heads: int = 4
    dim_head: int = 64
    dropout: float = 0.0
    norm_groups: int = 32
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        for name, (low, high) in _INT_RANGES.items():  # a checkpoint's JSON may hold anything: check every field
            object.__setattr__(self, name, _int_in(name, getattr(self, name), low, high))
        for name in ("channel_mult", "attention_resolutions"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or len(values) > MAX_LEVELS:
                raise CFMError(f"UNet {name}={values!r} must be a list of at most {MAX_LEVELS} integers")
            object.__setattr__(self, name, tuple(_int_in(name, v, 1, MAX_MULT) for v in values))
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise CFMError(f"UNet dropout={self.dropout!r} must be a number in [0, 1)")
        if self.attention not in ATTENTION_LAYOUTS:
            raise CFMError(f"attention={self.attention!r} is unknown; use one of {ATTENTION_LAYOUTS}")
        if not self.channel_mult:
            raise CFMError("UNetConfig needs a non-empty channel_mult")
        for ch in {self.model_channels * m for m in self.channel_mult}:
            if ch % self.norm_groups:
                raise CFMError(f"channel count {ch} is not divisible by norm_groups={self.norm_groups}; "
                               "pick model_channels/channel_mult that are multiples of it")

    @property
    def stride(self) -> int:
        """Total downsampling of the UNet: input sizes must be multiples of this (we pad otherwise)."""
        return 2 ** (len(self.channel_mult) - 1)

    def activation_bytes(self, batch: int, height: int, width: int, element_size: int) -> float:
        """Rough bytes one forward pass holds at once for a (batch, C, height, width) latent.

        Per latent pixel the UNet keeps its skip activations, Σ_levels (num_res_blocks+1)·channels/4^level, and a few
        full-resolution working tensors; attention adds (tokens²·heads) in case the backend is not memory-efficient.
        """
        per_pixel = sum((self.num_res_blocks + 1) * self.model_channels * mult / 4 ** level
                        for level, mult in enumerate(self.channel_mult))
        per_pixel += 6 * self.model_channels * self.channel_mult[0]
        activations = batch * height * width * per_pixel * element_size
        attention = sum(batch * self.num_heads * (height * width / ds ** 2) ** 2 * element_size
                        for ds in self.attention_resolutions)
        return activations + attention

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise CFMError(f"unknown UNet config fields {sorted(unknown)}; the file was written by a newer cfm_core")
        return cls(**d)


# Named presets. The paper's two (Tab. 9) match the official parameter counts exactly.
PRESETS: dict[str, UNetConfig] = {
    "paper-113m": UNetConfig(channel_mult=(1, 2, 3, 4)),
    "paper-306m": UNetConfig(channel_mult=(1, 2, 4, 8)),
    "small": UNetConfig(model_channels=64, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
                        attention_resolutions=(8,), num_heads=4, dim_head=32),
    "tiny": UNetConfig(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                       attention_resolutions=(4,), num_heads=2, dim_head=32),
}


def preset(name: str, latent_channels: int = 4, **overrides) -> UNetConfig:
    """A named architecture for ``latent_channels``-channel latents, with optional field overrides."""
    if name not in PRESETS:
        raise CFMError(f"unknown UNet preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], latent_channels=latent_channels, **overrides)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of raw t ∈ [0, 1] (no ×1000), ordered [cos, sin] as in the official code."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """h = conv(silu(norm(x))); h = norm(h)·(1 + scale(emb)) + shift(emb); out = skip(x) + zero_conv(silu(h))."""

    def __init__(self, channels: int, out_channels: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if channels == out_channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        h = rest(norm(h) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over pixels with 1×1-conv projections (official key names).

    ``layout="sdpa"``: standard attention, each pixel a token. ``layout="official"``: the official code's raw
    reshape of qkv (B, 3·H·D, L) to (B, H, L, 3·D) without a permute, so a "token" is 3·D consecutive values of the
    flattened (channel, pixel) array. Only needed to reproduce official weights exactly.
    """

    def __init__(self, channels: int, num_heads: int, dim_head: int, groups: int, layout: str):
        super().__init__()
        self.num_heads, self.dim_head, self.layout = num_heads, dim_head, layout
        inner = num_heads * dim_head
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * inner, 1)
        self.proj_out = _zero(nn.Conv1d(inner, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        length = math.prod(spatial)
        qkv = self.qkv(self.norm(x).reshape(b, c, length))
        heads, d = self.num_heads, self.dim_head
        if self.layout == "official":
            q, k, v = qkv.reshape(b, heads, length, 3 * d).split(d, dim=-1)
            h = F.scaled_dot_product_attention(q, k, v).reshape(b, heads * d, length)
        else:
            # contiguous q/k/v let SDPA pick a fused kernel instead of materialising the L×L matrix
            q, k, v = qkv.reshape(b, 3, heads, d, length).transpose(-1, -2).contiguous().unbind(1)
            h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, heads * d, length)
        return x + self.proj_out(h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Step(nn.Sequential):
    """A UNet stage: layers that take (x, emb) or just x, applied in order."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class VelocityUNet(nn.Module):
    """``forward(x_t, t, z_up) -> v``. Sizes not divisible by ``config.stride`` are replicate-padded and cropped."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        mc, groups = cfg.model_channels, cfg.norm_groups
        emb_dim = 4 * mc
        self.gradient_checkpointing = False
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attention(ch: int) -> SelfAttention:
            return SelfAttention(ch, cfg.num_heads, cfg.dim_head, groups, cfg.attention)

        self.input_blocks = nn.ModuleList([Step(nn.Conv2d(2 * cfg.latent_channels, mc, 3, padding=1))])
        skip_channels, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mult * mc, emb_dim, cfg.dropout, groups)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(attention(ch))
                self.input_blocks.append(Step(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Step(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = Step(ResBlock(ch, ch, emb_dim, cfg.dropout, groups), attention(ch),
                                 ResBlock(ch, ch, emb_dim, cfg.dropout, groups))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), mult * mc, emb_dim, cfg.dropout, groups)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(attention(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Step(*layers))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(),
                                 _zero(nn.Conv2d(ch, cfg.latent_channels, 3, padding=1)))

    def _run(self, block: Step, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, z_up: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x_t.shape
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32)
        t = t.reshape(()).expand(b) if t.numel() == 1 else t.reshape(b)  # one t for the batch, or one per sample
        s = self.config.stride
        pad_h, pad_w = (-height) % s, (-width) % s
        h = torch.cat([x_t, z_up], dim=1)
        if pad_h or pad_w:  # pad to the network's stride, crop the velocity back
            h = F.pad(h, (0, pad_w, 0, pad_h), mode="replicate")
        body = self.out[2].weight.dtype
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(body))
        conv_in = self.input_blocks[0][0]
        h = _float32_conv(conv_in, h).to(body)
        skips = [h]
        for block in self.input_blocks[1:]:
            h = self._run(block, h, emb)
            skips.append(h)
        h = self._run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
        norm, act, conv_out = self.out
        h = act(F.group_norm(h.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps))
        return _float32_conv(conv_out, h)[:, :, :height, :width]


def _float32_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` in float32 whatever the weights' dtype: the network's two edges.

    A bf16/fp16 network keeps 8 (11) significant bits. Rounding the input latents to that before the first
    convolution turns a smooth gradient into steps of about 1/256 of its value, which the network reads as edges
    and sharpens; rounding the last layer rounds the residual it outputs. Both edges are a small share of the
    compute (one convolution each at full resolution), so they run in float32 and only the body is reduced.
    Under autocast (training) the convolution follows autocast as before.
    """
    return F.conv2d(x.float(), conv.weight.float(), None if conv.bias is None else conv.bias.float(),
                    conv.stride, conv.padding, conv.dilation, conv.groups)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
