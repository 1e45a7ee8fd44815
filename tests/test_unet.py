"""The velocity UNet: parameter counts and key layout of the official network, the official attention quirk,
zero initialisation, any latent channel count, padding of odd sizes, the time embedding."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_zero_layers

from cfm_core.errors import CFMError
from cfm_core.unet import PRESETS, SelfAttention, UNetConfig, VelocityUNet, count_parameters, preset, timestep_embedding

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official-unet-state-dict.json"
if not REFERENCE.is_file():  # a checkout whose shared/ lives inside the repository
    REFERENCE = Path(__file__).resolve().parents[1] / "shared" / "reference" / "official-unet-state-dict.json"


@pytest.mark.parametrize("name, expected", [("paper-113m", 112_722_052), ("paper-306m", 305_806_340)])
def test_paper_presets_have_the_official_parameter_counts(name, expected):
    with torch.device("meta"):
        net = VelocityUNet(preset(name))
    assert count_parameters(net) == expected


@pytest.mark.skipif(not REFERENCE.is_file(), reason="shared/reference/official-unet-state-dict.json not present")
def test_official_306m_keys_and_shapes_equal_the_official_state_dict():
    reference = json.loads(REFERENCE.read_text())
    with torch.device("meta"):
        net = VelocityUNet(preset("paper-306m", attention="official"))
    ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
    assert len(ours) == reference["num_tensors"] == 408
    assert dict(ours) == {k: shape for k, shape in reference["tensors"]}
    assert ours == reference["tensors"]  # same order too
    assert count_parameters(net) == reference["total_parameters"]


def official_attention_reference(x: np.ndarray, attn: SelfAttention) -> np.ndarray:
    """The official SpatialSelfAttention written out head by head from the facts, in float64 numpy.

    qkv (B, 3·H·D, L); head h takes qkv channels [h·3D, (h+1)·3D) and reads that (3D × L) block row-major as an
    (L × 3D) matrix; q, k, v are its column blocks of D; out_h = softmax(q kᵀ / √D) v is (L × D) and is written
    back raw, row-major, into channels [h·D, (h+1)·D) as a (D × L) block; then x + proj_out(out).
    """
    b, c, hgt, wid = x.shape
    length, heads, d = hgt * wid, attn.num_heads, attn.dim_head
    with torch.no_grad():
        normed = attn.norm(torch.from_numpy(x).float()).double().numpy().reshape(b, c, length)
    w_qkv = attn.qkv.weight.detach().double().numpy()[:, :, 0]
    b_qkv = attn.qkv.bias.detach().double().numpy()
    w_out = attn.proj_out.weight.detach().double().numpy()[:, :, 0]
    b_out = attn.proj_out.bias.detach().double().numpy()
    result = np.empty((b, c, length))
    for n in range(b):
        qkv = w_qkv @ normed[n] + b_qkv[:, None]  # (3·H·D, L)
        out = np.empty((heads * d, length))
        for h in range(heads):
            tokens = qkv[h * 3 * d:(h + 1) * 3 * d].reshape(-1).reshape(length, 3 * d)
            q, k, v = tokens[:, :d], tokens[:, d:2 * d], tokens[:, 2 * d:]
            logits = q @ k.T / math.sqrt(d)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            out[h * d:(h + 1) * d] = (p @ v).reshape(-1).reshape(d, length)
        result[n] = x[n].reshape(c, length) + w_out @ out + b_out[:, None]
    return result.reshape(b, c, hgt, wid)


def random_attention(layout: str, seed: int = 0) -> SelfAttention:
    torch.manual_seed(seed)
    attn = SelfAttention(channels=64, num_heads=4, dim_head=16, groups=32, layout=layout)
    with torch.no_grad():  # proj_out is zero-initialised: without this both layouts return x unchanged
        attn.proj_out.weight.normal_(0, 0.2)
        attn.proj_out.bias.normal_(0, 0.2)
        attn.qkv.weight.normal_(0, 0.15)
    return attn.eval()


def attention_and_reference(layout: str) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(our attention's output, the per-head reference's, the input) for a random block with ``layout``."""
    attn = random_attention(layout)
    x = torch.randn(2, 64, 5, 6, generator=torch.Generator().manual_seed(1))
    reference = official_attention_reference(x.double().numpy(), attn)
    with torch.no_grad():
        return attn(x).double().numpy(), reference, x


def test_official_attention_layout_matches_a_per_head_reference():
    ours, reference, x = attention_and_reference("official")
    err = np.abs(ours - reference).max()
    print(f"official layout vs per-head reference: max abs diff {err:.2e}")
    assert err < 5e-6
    assert np.abs(reference - x.numpy()).max() > 0.1  # the attention branch is not trivially zero


def test_sdpa_layout_differs_from_the_official_reference():
    ours, reference, _ = attention_and_reference("sdpa")
    assert np.abs(ours - reference).max() > 1e-2


def test_sdpa_attention_is_translation_equivariant_under_a_cyclic_shift():
    attn = random_attention("sdpa")
    x = torch.randn(1, 64, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        shifted_then = attn(torch.roll(x, shifts=(1, 2), dims=(2, 3)))
        then_shifted = torch.roll(attn(x), shifts=(1, 2), dims=(2, 3))
    torch.testing.assert_close(shifted_then, then_shifted, atol=1e-5, rtol=1e-5)


def test_attention_setting_reaches_every_attention_module():
    for layout in ("sdpa", "official"):
        net = VelocityUNet(preset("tiny", attention=layout))
        layouts = {m.layout for m in net.modules() if isinstance(m, SelfAttention)}
        assert layouts == {layout}


def test_a_fresh_model_outputs_exactly_zero():
    net = VelocityUNet(preset("tiny")).eval()
    x, z = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        v = net(x, torch.tensor([0.1, 0.9]), z)
    assert v.shape == x.shape
    assert torch.count_nonzero(v) == 0


@pytest.mark.parametrize("channels", [3, 4, 12, 16])
def test_any_latent_channel_count_works(channels):
    net = VelocityUNet(preset("tiny", channels))
    assert net.input_blocks[0][0].weight.shape[1] == 2 * channels
    assert net.out[-1].weight.shape[0] == channels
    randomize_zero_layers(net)
    with torch.no_grad():
        v = net(torch.randn(1, channels, 8, 8), 0.5, torch.randn(1, channels, 8, 8))
    assert v.shape == (1, channels, 8, 8)
    assert torch.isfinite(v).all() and v.abs().max() > 0


@pytest.mark.parametrize("size", [(7, 9), (5, 4), (13, 16), (1, 1)])
def test_sizes_not_divisible_by_the_stride_are_padded_and_cropped(size):
    net = VelocityUNet(preset("tiny"))
    randomize_zero_layers(net)
    x = torch.randn(1, 4, *size)
    with torch.no_grad():
        v = net(x, 0.3, x)
    assert net.config.stride == 4
    assert v.shape == x.shape and torch.isfinite(v).all()


def test_time_may_be_a_float_a_scalar_or_one_value_per_sample():
    net = VelocityUNet(preset("tiny"))
    randomize_zero_layers(net)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        a = net(x, 0.25, x)
        b = net(x, torch.tensor(0.25), x)
        c = net(x, torch.tensor([0.25, 0.25]), x)
        one = net(x, torch.tensor([0.25]), x)
        d = net(x, torch.tensor([0.25, 0.75]), x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, one)
    torch.testing.assert_close(a[0], d[0])
    assert (a[1] - d[1]).abs().max() > 1e-4  # t matters


def test_time_embedding_is_cos_then_sin_of_raw_t():
    t = torch.tensor([0.0, 0.4, 1.0])
    emb = timestep_embedding(t, 128)
    freqs = 10000.0 ** (-torch.arange(64, dtype=torch.float64) / 64)
    args = t.double()[:, None] * freqs[None]
    expected = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    torch.testing.assert_close(emb.double(), expected, atol=1e-6, rtol=0)
    assert torch.equal(emb[0, :64], torch.ones(64)) and torch.equal(emb[0, 64:], torch.zeros(64))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    net = VelocityUNet(preset("tiny"))
    randomize_zero_layers(net)
    net.train()
    x = torch.randn(2, 4, 8, 8)
    grads = []
    for checkpointing in (False, True):
        net.zero_grad()
        net.gradient_checkpointing = checkpointing
        net(x, torch.tensor([0.2, 0.7]), x).square().mean().backward()
        grads.append(net.input_blocks[0][0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_presets_and_bad_configs():
    assert set(PRESETS) >= {"paper-113m", "paper-306m", "small", "tiny"}
    assert preset("small", 16).latent_channels == 16
    with pytest.raises(CFMError, match="preset"):
        preset("huge")
    with pytest.raises(CFMError, match="attention"):
        UNetConfig(attention="flash")
    with pytest.raises(CFMError, match="norm_groups"):
        UNetConfig(model_channels=40)
    with pytest.raises(CFMError, match="newer"):
        UNetConfig.from_dict({**UNetConfig().to_dict(), "rotary": True})
    assert UNetConfig.from_dict(preset("tiny", 12).to_dict()) == preset("tiny", 12)


def test_a_reduced_precision_network_reads_its_input_latents_unrounded():
    """A bf16 body with float32 edges: the first convolution sees the latents before bf16 rounds them (which turns a
    smooth gradient into steps) and the output is float32, so it is closer to the fp32 network than the same bf16
    network fed pre-rounded latents (what it computed when the whole network ran in bf16)."""
    from cfm_core.bundled import require_bundled_model
    from cfm_core.checkpoint import load_model

    net32 = load_model(require_bundled_model()).net
    net16 = load_model(require_bundled_model(), dtype=torch.bfloat16).net
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0.2, 0.9, 64), torch.linspace(0.3, 0.8, 64), indexing="ij")
    z = (0.5 * yy + 0.5 * xx).expand(1, 12, 64, 64) + 0.002 * torch.randn(1, 12, 64, 64, generator=gen)
    t = torch.tensor([0.5])
    with torch.no_grad():
        reference, edges = net32(z, t, z), net16(z, t, z)
        rounded = net16(z.bfloat16().float(), t, z.bfloat16().float())
    assert edges.dtype == torch.float32 and next(net16.parameters()).dtype == torch.bfloat16

    def rms(a: torch.Tensor) -> float:
        return a.pow(2).mean().sqrt().item()

    assert rms(edges - reference) < 0.9 * rms(rounded - reference)
