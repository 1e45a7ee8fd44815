"""Self-describing safetensors checkpoints (round trip, dtypes, refusals) and the safe official converter."""
from __future__ import annotations

import builtins
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import randomize_zero_layers, tiny_model
from safetensors.torch import save_file

from cfm_core.checkpoint import (
    FORMAT,
    atomic_write,
    convert_official,
    load_model,
    official_config,
    read_config,
    read_official_state_dict,
    save_model,
)
from cfm_core.errors import CFMError
from cfm_core.unet import VelocityUNet, preset

REPO = Path(__file__).resolve().parents[1]


def outputs(model, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x, z = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    with torch.no_grad():
        return model(x.to(model.dtype), torch.tensor([0.2, 0.8]), z.to(model.dtype)).float()


@pytest.mark.parametrize("prediction", ["velocity", "residual"])
def test_fp32_round_trip_is_bit_identical(tmp_path, prediction):
    model = tiny_model(seed=3, prediction=prediction)
    path = tmp_path / "m.safetensors"
    save_model(model, str(path))
    loaded = load_model(str(path), channels_last=False)  # the layout the model was built in: the same kernels run
    assert loaded.config == model.config and read_config(str(path)) == model.config
    saved, back = model.net.state_dict(), loaded.net.state_dict()
    assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)
    assert torch.equal(outputs(model), outputs(loaded))
    assert torch.allclose(outputs(model), outputs(load_model(str(path))), atol=1e-5)  # CPU default: channels-last
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_saving_and_loading(tmp_path, dtype):
    model = tiny_model(seed=4)
    path = str(tmp_path / "m.safetensors")
    save_model(model, path, dtype=dtype)
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {dtype}
    as_saved = load_model(path, dtype=dtype)
    assert {p.dtype for p in as_saved.parameters()} == {dtype} and as_saved.dtype == dtype
    widened = load_model(path)
    assert {p.dtype for p in widened.parameters()} == {torch.float32}
    for k, v in model.net.state_dict().items():
        assert torch.equal(widened.net.state_dict()[k], v.to(dtype).float())
    out = outputs(as_saved)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, outputs(model), atol=0.1, rtol=0.1)


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def failing(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(str(path), failing)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    atomic_write(str(path), lambda tmp: Path(tmp).write_bytes(b"new"))
    assert path.read_bytes() == b"new"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_atomic_write_gives_new_files_the_usual_mode(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write(str(tmp_path / "atomic.txt"), lambda tmp: Path(tmp).write_text("x"))
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


# ------------------------------------------------------------------------------------------------- refusals

def saved_model(tmp_path) -> tuple[Path, dict, dict]:
    model = tiny_model(seed=5)
    path = tmp_path / "good.safetensors"
    save_model(model, str(path))
    meta = {"format": FORMAT, "format_version": "1", "config": json.dumps(model.config.to_dict())}
    tensors = {k: v.contiguous() for k, v in model.net.state_dict().items()}
    return path, meta, tensors


def test_truncated_file_is_refused(tmp_path):
    path, _, _ = saved_model(tmp_path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CFMError, match="cut"):
            load_model(str(bad))


def test_a_safetensors_file_without_our_metadata_is_refused(tmp_path):
    _, _, tensors = saved_model(tmp_path)
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CFMError, match="not a CFM checkpoint"):
        load_model(str(tmp_path / "plain.safetensors"))
    with pytest.raises(CFMError, match="not a CFM checkpoint"):
        read_config(str(tmp_path / "plain.safetensors"))


def test_missing_or_broken_config_metadata_is_refused(tmp_path):
    _, meta, tensors = saved_model(tmp_path)
    save_file(tensors, str(tmp_path / "noconfig.safetensors"), metadata={"format": FORMAT})
    with pytest.raises(CFMError, match="'config'"):
        load_model(str(tmp_path / "noconfig.safetensors"))
    for i, broken in enumerate(["{not json", "[1, 2]", json.dumps({"unet": {}}), json.dumps({"latent": {}})]):
        save_file(tensors, str(tmp_path / f"broken{i}.safetensors"), metadata={**meta, "config": broken})
        with pytest.raises(CFMError, match="config"):
            load_model(str(tmp_path / f"broken{i}.safetensors"))


def test_a_pickle_file_is_refused_with_the_converter_hint(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1)}}, str(tmp_path / "model.ckpt"))
    with open(tmp_path / "legacy.pt", "wb") as fh:
        pickle.dump({"a": 1}, fh, protocol=2)
    for name in ("model.ckpt", "legacy.pt"):
        with pytest.raises(CFMError, match="convert-official"):
            load_model(str(tmp_path / name))


def test_a_nonexistent_path_is_refused(tmp_path):
    with pytest.raises(CFMError, match="does not exist"):
        load_model(str(tmp_path / "nope.safetensors"))


def test_shape_or_key_mismatch_with_the_config_is_refused(tmp_path):
    _, meta, tensors = saved_model(tmp_path)
    wrong_shape = dict(tensors, **{"out.2.bias": torch.zeros(5)})
    save_file(wrong_shape, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(CFMError, match="out.2.bias"):
        load_model(str(tmp_path / "shape.safetensors"))
    missing = {k: v for k, v in tensors.items() if k != "out.2.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(CFMError, match="missing"):
        load_model(str(tmp_path / "missing.safetensors"))


# ------------------------------------------------------------------------------- official checkpoint converter

class ShellPayload:
    """Unpickling this runs a shell command (the classic malicious-checkpoint payload)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def write_fake_official_checkpoint(path: Path, marker: Path) -> tuple[dict, dict]:
    """A Lightning-style .ckpt of the tiny preset in the official layout, with an OmegaConf-like object and two
    code-running payloads. The DictConfig class lives in a throwaway module that is gone when the file is read."""
    torch.manual_seed(0)
    net = VelocityUNet(preset("tiny", attention="official"))
    randomize_zero_layers(net, seed=1)
    ema = {k: v.clone() for k, v in net.state_dict().items()}
    online = {k: v + 1 for k, v in ema.items()}
    state_dict = {f"ema_model.ema_model.net.{k}": v for k, v in ema.items()}
    state_dict.update({f"model.net.{k}": v for k, v in online.items()})
    state_dict.update({"ema_model.step": torch.tensor(1000), "diffusion.alpha_bar_t": torch.rand(1000),
                       "first_stage.encoder.conv_in.weight": torch.zeros(2, 3, 3, 3)})
    package, module = types.ModuleType("omegaconf"), types.ModuleType("omegaconf.dictconfig")
    DictConfig = type("DictConfig", (), {"__module__": "omegaconf.dictconfig"})
    module.DictConfig = DictConfig
    sys.modules["omegaconf"], sys.modules["omegaconf.dictconfig"] = package, module
    real_omegaconf = None
    try:
        hparams = DictConfig()
        hparams.__dict__.update({"_content": {"unet": {"dim_head": 32}}, "payload": ShellPayload(marker)})
        ckpt = {"state_dict": state_dict, "hyper_parameters": hparams, "epoch": 3,
                "callbacks": [ExecPayload(marker.with_suffix(".exec"))]}
        torch.save(ckpt, str(path))
    finally:
        del sys.modules["omegaconf"], sys.modules["omegaconf.dictconfig"]
    assert real_omegaconf is None
    return ema, online


@pytest.fixture()
def official_ckpt(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "last.ckpt"
    ema, online = write_fake_official_checkpoint(path, marker)
    return path, marker, ema, online


def test_the_payloads_are_live(tmp_path):
    """Guard against a vacuous test: unpickling the payload objects normally does run their code."""
    marker = tmp_path / "live"
    pickle.loads(pickle.dumps(ShellPayload(marker)))
    pickle.loads(pickle.dumps(ExecPayload(marker.with_suffix(".exec"))))
    assert marker.exists() and marker.with_suffix(".exec").exists()


def test_weights_only_torch_load_refuses_the_official_file(official_ckpt):
    path, marker, _, _ = official_ckpt
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(path), weights_only=True)
    assert not marker.exists()


def test_reading_the_official_file_runs_no_code_and_returns_its_tensors(official_ckpt):
    path, marker, ema, online = official_ckpt
    sd = read_official_state_dict(str(path))
    assert not marker.exists() and not marker.with_suffix(".exec").exists()
    assert len(sd) == 2 * len(ema) + 3
    for k, v in ema.items():
        assert torch.equal(sd[f"ema_model.ema_model.net.{k}"], v)
        assert torch.equal(sd[f"model.net.{k}"], online[k])


def test_reading_works_without_torchs_private_allowlist(official_ckpt, monkeypatch):
    from cfm_core import checkpoint

    path, marker, ema, _ = official_ckpt
    monkeypatch.setitem(sys.modules, "torch._weights_only_unpickler", None)  # makes the import fail
    checkpoint._torch_allowed_globals.cache_clear()
    try:
        sd = read_official_state_dict(str(path))
    finally:
        checkpoint._torch_allowed_globals.cache_clear()
    assert not marker.exists()
    assert all(torch.equal(sd[f"ema_model.ema_model.net.{k}"], v) for k, v in ema.items())


def test_official_config_reads_the_architecture_off_the_shapes(official_ckpt):
    _, _, ema, _ = official_ckpt
    assert official_config(ema, dim_head=32) == preset("tiny", attention="official")
    assert official_config(ema).num_heads * official_config(ema).dim_head == 64  # default dim_head 64: one head
    with pytest.raises(CFMError, match="dim_head"):
        official_config(ema, dim_head=48)
    with pytest.raises(CFMError, match="EfficientUNet"):
        official_config({k: v for k, v in ema.items() if not k.startswith("middle_block")})
    with torch.device("meta"):
        for name in ("paper-113m", "paper-306m"):
            sd = VelocityUNet(preset(name, attention="official")).state_dict()
            assert official_config(sd) == preset(name, attention="official")


@pytest.mark.parametrize("use_ema", [True, False])
def test_convert_official_writes_a_loadable_checkpoint(official_ckpt, tmp_path, use_ema):
    path, marker, ema, online = official_ckpt
    out = tmp_path / "converted.safetensors"
    convert_official(str(path), str(out), use_ema=use_ema, dim_head=32)
    assert not marker.exists() and not marker.with_suffix(".exec").exists()
    model = load_model(str(out))
    assert model.config.unet == preset("tiny", attention="official")
    assert model.config.noise_step == 400 and model.config.latent.scale_factor == 0.18215
    assert model.config.latent.family == "sd15"  # the official models work in the SD1.x VAE's space
    expected = ema if use_ema else online
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in expected.items())
    assert model.config.training["weights"] == ("ema" if use_ema else "online")


def test_convert_refuses_files_that_are_not_official_checkpoints(tmp_path):
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, str(tmp_path / "other.ckpt"))
    with pytest.raises(CFMError, match="fm-boosting"):
        convert_official(str(tmp_path / "other.ckpt"), str(tmp_path / "o.safetensors"))
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CFMError, match="zip"):
        convert_official(str(tmp_path / "text.ckpt"), str(tmp_path / "o.safetensors"))
    with pytest.raises(CFMError, match="does not exist"):
        read_official_state_dict(str(tmp_path / "absent.ckpt"))
    assert not (tmp_path / "o.safetensors").exists()


def test_load_model_refuses_the_official_ckpt(official_ckpt):
    path, marker, _, _ = official_ckpt
    with pytest.raises(CFMError, match="convert-official"):
        load_model(str(path))
    assert not marker.exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cfm_core", *args], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_convert_official_and_info(official_ckpt, tmp_path):
    path, marker, ema, _ = official_ckpt
    out = tmp_path / "cli.safetensors"
    done = run_cli("convert-official", str(path), str(out), "--dim-head", "32")
    assert done.returncode == 0, done.stderr
    assert not marker.exists() and not marker.with_suffix(".exec").exists()
    assert "parameters" in done.stdout
    assert all(torch.equal(load_model(str(out)).net.state_dict()[k], v) for k, v in ema.items())
    info = run_cli("info", str(out))
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["unet"]["attention"] == "official" and described["unet"]["num_heads"] == 2
    assert described["parameters"] == sum(v.numel() for v in ema.values())


def test_cli_refusals_are_one_line_errors(official_ckpt, tmp_path, capsys):
    from cfm_core.__main__ import main

    path, marker, _, _ = official_ckpt
    assert main(["info", str(path)]) == 2
    assert main(["convert-official", str(path), str(tmp_path / "o.safetensors"), "--dim-head", "48"]) == 2
    assert main(["info", str(tmp_path / "absent.safetensors")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "convert-official" in lines[0] and "dim_head" in lines[1] and "does not exist" in lines[2]
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()
