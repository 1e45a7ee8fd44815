"""Self-describing safetensors checkpoints, and a safe converter for official Lightning checkpoints.

Metadata keys: ``format`` ("cfm-boost"), ``format_version``, ``config`` (JSON of :class:`CFMConfig`). Files are
written atomically (temporary file in the same folder, fsync, rename), so an interrupted save never leaves a
truncated checkpoint behind. Pickle files are refused: a pickle can run arbitrary code when loaded.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import torch

from .autoencoders import LatentSpec
from .errors import CFMError
from .model import CFMConfig, CFMModel
from .unet import UNetConfig

FORMAT = "cfm-boost"
FORMAT_VERSION = "1"
OFFICIAL_EMA_PREFIX = "ema_model.ema_model.net."
OFFICIAL_ONLINE_PREFIX = "model.net."


def atomic_write(path: str, write) -> None:
    """Call ``write(tmp_path)`` then move the finished file over ``path``; on any error leave ``path`` as it was."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: CFMModel, path: str, dtype: torch.dtype | None = None) -> None:
    """Write ``model`` (weights + config) to ``path`` as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.net.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(model.config.to_dict())}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _is_pickle_or_zip(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head == b"PK\x03\x04"


def read_config(path: str) -> CFMConfig:
    """The config stored in a checkpoint, without loading its weights."""
    return _open(path)[1]


def _open(path: str):
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CFMError(f"model file {path!r} does not exist; pass the path of a CFM .safetensors file")
    if _is_pickle_or_zip(path):
        raise CFMError(f"model file {path!r} is a pickle checkpoint, which could run code when loaded; convert it "
                       "with `python -m cfm_core convert-official IN.ckpt OUT.safetensors`")
    try:
        handle = safe_open(path, framework="pt")
        meta = handle.metadata() or {}
    except Exception as exc:
        raise CFMError(f"model file {path!r} is not a readable safetensors file ({exc}); "
                       "is it truncated or another format?") from None
    if meta.get("format") != FORMAT:
        raise CFMError(f"model file {path!r} is not a CFM checkpoint (no '{FORMAT}' metadata); "
                       "train one with `python -m cfm_core train` or convert an official one")
    if "config" not in meta:
        raise CFMError(f"model file {path!r} lacks the 'config' metadata field; re-export it with cfm_core")
    try:
        config = CFMConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CFMError(f"model file {path!r} has a broken config metadata field ({exc!r}); re-export it") from None
    return handle, config


def load_model(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> CFMModel:
    """Build the model a checkpoint describes and load its weights (eval mode, on ``device`` in ``dtype``)."""
    handle, config = _open(path)
    model = CFMModel(config)
    expected = model.net.state_dict()
    try:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:
        raise CFMError(f"model file {path!r} is truncated or corrupt ({exc}); download or export it again") from None
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CFMError(f"model file {path!r} does not match its own config ({len(missing)} missing, {len(extra)} "
                       f"unexpected tensors, e.g. {(missing or extra)[0]}); the file is damaged")
    bad = [k for k in tensors if tensors[k].shape != expected[k].shape]
    if bad:
        raise CFMError(f"model file {path!r}: tensor {bad[0]} has shape {tuple(tensors[bad[0]].shape)}, "
                       f"config says {tuple(expected[bad[0]].shape)}; the file is damaged")
    model.net.load_state_dict(tensors)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


# ---------------------------------------------------------------- official checkpoints, read without running code

class _Inert:
    """Stands in for every class or function a pickle names: accepts any arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return _Inert(*args)


def _inert_type(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


def read_official_state_dict(path: str) -> dict:
    """Tensors of a Lightning ``.ckpt`` through torch's weights-only unpickler.

    Every global the file names beyond tensors and containers (OmegaConf configs, or a malicious ``os.system``)
    is replaced by an inert stand-in class, so nothing from the file is ever executed.
    """
    if not zipfile.is_zipfile(path):
        raise CFMError(f"{path!r} is not a torch zip checkpoint; official checkpoints are Lightning .ckpt files")
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    names = get_unsafe_globals_in_checkpoint(path)
    stand_ins = [(_inert_type(n), n) for n in names]
    with safe_globals(stand_ins):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise CFMError(f"{path!r} holds no state_dict; is it an official fm-boosting checkpoint?")
    return sd


def official_config(net_sd: dict) -> UNetConfig:
    """Read the official EfficientUNet architecture off its tensor shapes."""
    mc = int(net_sd["input_blocks.0.0.weight"].shape[0])
    in_ch = int(net_sd["input_blocks.0.0.weight"].shape[1])
    downs = sorted(int(k.split(".")[1]) for k in net_sd if k.endswith(".op.weight"))
    n_levels = len(downs) + 1
    nrb = downs[0] - 1 if downs else sum(1 for k in net_sd if k.endswith("in_layers.2.weight")
                                         and k.startswith("input_blocks."))
    mults, block = [], 1
    for level in range(n_levels):
        mults.append(int(net_sd[f"input_blocks.{block}.0.in_layers.2.weight"].shape[0]) // mc)
        block += nrb + 1
    attn_ds, block, ds = [], 1, 1
    for level in range(n_levels):
        if f"input_blocks.{block}.1.qkv.weight" in net_sd:
            attn_ds.append(ds)
        block += nrb + 1
        ds *= 2
    qkv = net_sd["middle_block.1.qkv.weight"].shape[0]
    inner = net_sd["middle_block.1.proj_out.weight"].shape[1]
    dim_head = 64 if inner % 64 == 0 else inner
    return UNetConfig(latent_channels=in_ch // 2, model_channels=mc, channel_mult=tuple(mults),
                      num_res_blocks=nrb, attention_resolutions=tuple(attn_ds), num_heads=int(inner // dim_head),
                      dim_head=int(dim_head), attention="official") if qkv == 3 * inner else None


def convert_official(src: str, dst: str, *, use_ema: bool = True, latent: LatentSpec | None = None) -> CFMModel:
    """Convert an official fm-boosting Lightning checkpoint to a self-describing safetensors file."""
    sd = read_official_state_dict(src)
    prefix = OFFICIAL_EMA_PREFIX if use_ema else OFFICIAL_ONLINE_PREFIX
    net_sd = {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}
    if not net_sd:
        raise CFMError(f"{src!r} has no '{prefix}*' tensors; is it an fm-boosting checkpoint?")
    unet = official_config(net_sd)
    # The official setup: SD1.x kl-f8 VAE, ×0.18215, 64→128 latents, noise step 400, Euler.
    config = CFMConfig(unet=unet, latent=latent or LatentSpec(), factor=2, noise_step=400,
                       default_solver="euler", default_steps=40,
                       training={"source": os.path.basename(src), "weights": "ema" if use_ema else "online"})
    model = CFMModel(config)
    model.net.load_state_dict(net_sd)
    save_model(model, dst)
    return model
