"""The counted training-step cost (bench section ``flops``) and the FLOP/s the train section derives from it."""
from __future__ import annotations

import pytest
import torch
from test_bench import ctx, patch_measurements
from torch.utils.flop_counter import FlopCounterMode

from cfm_core.bench.flops import (
    GPU_PEAK_TFLOPS,
    FlopsConfig,
    Workload,
    cache_bytes_per_sample,
    count_training_step,
    count_vae_encode,
    run_flops,
)
from cfm_core.bench.train import TrainConfig, run_train
from cfm_core.path import training_loss
from cfm_core.unet import VelocityUNet, preset


def test_meta_device_count_equals_a_real_cpu_step():
    """Counting on the meta device (no compute) gives the FLOPs of a real step on real tensors. The real step runs
    attention through SDPA's math backend: FlopCounterMode does not see inside the fused CPU kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    counted = count_training_step("tiny", 16)
    torch.manual_seed(0)
    net = VelocityUNet(preset("tiny", 4))
    x1, z_up, noise = (torch.randn(1, 4, 16, 16) for _ in range(3))
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss = training_loss(net, x1, z_up, "cfm", t=torch.rand(1), noise=noise).loss
        forward = counter.get_total_flops()
        loss.backward()
    assert (counted.forward_flops, counted.step_flops) == (forward, counter.get_total_flops())
    # backward of convs and linears costs two forwards (grad wrt input and wrt weight)
    assert 2.5 * forward < counted.step_flops < 3.5 * forward
    assert counted.saved_bytes > x1.numel() * 4 * 10


def test_flops_grow_with_the_latent_area_and_the_projection_is_the_stated_arithmetic():
    small, large = count_training_step("tiny", 16), count_training_step("tiny", 32)
    assert 3.5 < large.step_flops / small.step_flops < 4.5
    cfg = FlopsConfig(presets=("tiny",), latents=(16,), workloads=(Workload("w", "tiny", 8, 16),),
                      steps=1000, utilisation=0.5, cache_samples=10)
    section = run_flops(ctx(), cfg)
    counted, projected, cache, encode = section.tables
    assert counted.rows[0]["step GFLOP"] == pytest.approx(small.step_flops / 1e9)
    row = projected.rows[0]
    for gpu, peak in GPU_PEAK_TFLOPS.items():
        seconds = small.step_flops * 8 / (peak * 1e12 * 0.5)
        assert row[f"{gpu} s / step"] == pytest.approx(seconds)
        assert row[f"{gpu} hours"] == pytest.approx(seconds * 1000 / 3600)
    assert cache.rows[0]["GiB"] == pytest.approx(cache_bytes_per_sample(4, 16) * 10 / 2 ** 30)
    assert cache_bytes_per_sample(16, 128) == 2 * 16 * 128 * 128 * 4
    assert [r["latent channels"] for r in encode.rows] == [4, 16]
    assert encode.rows[0]["TFLOP / sample"] > 0.1  # an SD VAE encode of 128² px is ~60 GFLOP


def test_vae_encode_count_grows_faster_than_the_area():
    """The VAE's mid-block attention over all latent pixels is quadratic in the area."""
    small, large = count_vae_encode(64), count_vae_encode(128)
    assert large / small > 4.0
    assert abs(count_vae_encode(64, 16) - small) / small < 0.05  # 16 channels: only the last convs differ


def test_train_section_reports_the_flops_it_achieves(monkeypatch):
    patch_measurements(monkeypatch, {"tiny": 0.5})
    section = run_train(ctx(), TrainConfig(presets=("tiny",), latent=16, batch=2, precisions=("fp32",)))
    row = section.tables[0].rows[0]
    assert row["TFLOP/s achieved"] == pytest.approx(count_training_step("tiny", 16).step_flops * 2 / 0.5 / 1e12)
