"""Self-describing safetensors checkpoints, and a safe converter for official Lightning checkpoints.

Metadata keys: ``format`` ("cfm-boost"), ``format_version``, ``config`` (JSON of :class:`CFMConfig`). Files are
written atomically (temporary file in the same folder, fsync, rename), so an interrupted save never leaves a
truncated checkpoint behind. Pickle files are refused: a pickle can run arbitrary code when loaded.
"""
from __future__ import annotations

import collections
import functools
import json
import os
import pickle
import tempfile
import types
import zipfile

import torch

from .augment import DEFAULT_NOISE_STEP
from .autoencoders import LatentSpec
from .errors import CFMError, first_line
from .model import CFMConfig, CFMModel
from .unet import UNetConfig

FORMAT = "cfm-boost"
FORMAT_VERSION = "1"
OFFICIAL_EMA_PREFIX = "ema_model.ema_model.net."
OFFICIAL_ONLINE_PREFIX = "model.net."
OFFICIAL_DIM_HEAD = 64


def atomic_write(path: str, write, *, overwrite: bool = True) -> None:
    """Call ``write(tmp_path)`` then move the finished file over ``path``; on any error leave ``path`` as it was.

    ``overwrite=False``: the finished file is linked into place only if ``path`` still does not exist, so a file
    that appeared meanwhile (another run writing to the same folder) is never replaced (CFMError instead)."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise CFMError(f"{path!r} is a folder; pass a file name to write")
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode())  # mkstemp makes 0600 files; give the usual umask-based mode instead
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _link_new(tmp: str, path: str) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists: a hard link is created atomically or not at all."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise CFMError(f"{path!r} appeared while this run was working (another run writing there?); it was left "
                       "as it is — pass --overwrite to replace it") from None
    except OSError:  # a file system without hard links (FAT, some network shares): check, then rename
        if os.path.lexists(path):
            raise CFMError(f"{path!r} already exists; pass --overwrite to replace it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 less the process umask."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def check_destination(path: str, *, overwrite: bool, inputs: tuple[str, ...] = (), what: str = "output") -> None:
    """Before any work: refuse a folder, a path that is one of this command's ``inputs`` (even with --overwrite)
    and an existing file unless ``overwrite``."""
    if os.path.isdir(path):
        example = os.path.join(path, "model.safetensors")
        raise CFMError(f"{what} {path!r} is a folder; pass a file name such as {example!r}")
    if not os.path.exists(path):
        return
    for source in inputs:
        if source and os.path.exists(source) and os.path.samefile(path, source):
            raise CFMError(f"{what} {path!r} is this command's own input {source!r}; write to another path")
    if not overwrite:
        raise CFMError(f"{what} {path!r} already exists; pass --overwrite to replace it or choose another path")


def check_writable(folder: str, flag: str = "-o") -> None:
    """Before any work: fail if ``folder`` cannot be created or written (its nearest existing ancestor decides);
    the message names the command's ``flag``."""
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise CFMError(f"output folder {folder!r} cannot be created: {probe!r} is a file; choose another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CFMError(f"output folder {folder!r} is not writable ({probe!r} denies it); choose another {flag}")


def save_model(model: CFMModel, path: str, dtype: torch.dtype | None = None, *, overwrite: bool = True) -> None:
    """Write ``model`` (weights + config) to ``path`` as safetensors, atomically (``overwrite=False``: never replace
    a file, see :func:`atomic_write`)."""
    from safetensors.torch import save_file

    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.net.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(model.config.to_dict())}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta), overwrite=overwrite)


def _is_pickle_or_zip(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head == b"PK\x03\x04"


def read_config(path: str) -> CFMConfig:
    """The config stored in a checkpoint, without loading its weights."""
    return _open(path)[1]


def _open(path: str):
    from safetensors import safe_open

    if os.path.isdir(path):
        raise CFMError(f"model file {path!r} is a folder; pass the CFM .safetensors file inside it")
    if not os.path.isfile(path):
        what = "is not a regular file" if os.path.exists(path) else "does not exist"
        raise CFMError(f"model file {path!r} {what}; pass the path of a CFM .safetensors file")
    if os.path.getsize(path) == 0:
        raise CFMError(f"model file {path!r} is empty (0 bytes); an interrupted copy? copy or export it again")
    if _is_pickle_or_zip(path):
        raise CFMError(f"model file {path!r} is a pickle checkpoint, which could run code when loaded; convert it "
                       "with `python -m cfm_core convert-official IN.ckpt OUT.safetensors`")
    try:
        handle = safe_open(path, framework="pt")
        meta = handle.metadata() or {}
    except Exception as exc:
        raise CFMError(f"model file {path!r} is not a readable safetensors file ({first_line(exc)}); "
                       "is it truncated or another format?") from None
    if meta.get("format") != FORMAT:
        raise CFMError(f"model file {path!r} is not a CFM checkpoint (no '{FORMAT}' metadata); "
                       "train one with `python -m cfm_core train` or convert an official one")
    if "config" not in meta:
        raise CFMError(f"model file {path!r} lacks the 'config' metadata field; re-export it with cfm_core")
    try:
        config = CFMConfig.from_dict(json.loads(meta["config"]))
    except CFMError as exc:
        raise CFMError(f"model file {path!r} has an invalid config: {exc}; re-export it") from None
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise CFMError(f"model file {path!r} has a broken config metadata field ({type(exc).__name__}: "
                       f"{first_line(exc)}); re-export it") from None
    return handle, config


def runs_channels_last(config: CFMConfig, device: str | torch.device) -> bool:
    """Whether a model runs with channels-last weights: on the CPU, for UNets without attention layers. Measured
    side by side (``python -m cfm_core bench --quick --sections precision``, docs/benchmarks.md): the bundled model's
    UNet (no attention) runs 1.27× faster channels-last in fp32 and 1.42× in bf16; the paper's 113M UNet (attention)
    was not reliably faster in fp32 (0.73× on one thread, 1.03× on two), so models with attention keep the default."""
    return torch.device(device).type == "cpu" and not config.unet.attention_resolutions


def load_model(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
               channels_last: bool | None = None) -> CFMModel:
    """Build the model a checkpoint describes and load its weights (eval mode, on ``device`` in ``dtype``).

    ``channels_last`` (default: :func:`runs_channels_last` on ``device``) stores the convolution weights in the
    layout oneDNN's CPU convolutions run fastest in; the outputs agree with the default layout to rounding."""
    handle, config = _open(path)
    _check_shapes(path, handle, config)  # from the header, before anything is allocated
    model = CFMModel(config)
    try:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:
        raise CFMError(f"model file {path!r} is truncated or corrupt ({first_line(exc)}); download or export it "
                       "again") from None
    model.net.load_state_dict(tensors)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if runs_channels_last(config, device) if channels_last is None else channels_last:
        model.net.to(memory_format=torch.channels_last)
    return model


def _check_shapes(path: str, handle, config: CFMConfig) -> None:
    """The tensors the config declares against the file's header (names, shapes, float dtypes), with the model
    built on the meta device: a config claiming 128000 channels is refused without allocating 262 GB."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CFMModel(config).net.state_dict().items()}
    try:
        stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}
    except Exception as exc:
        raise CFMError(f"model file {path!r} is truncated or corrupt ({first_line(exc)}); download or export it "
                       "again") from None
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise CFMError(f"model file {path!r} does not match its own config ({len(missing)} missing, {len(extra)} "
                       f"unexpected tensors, e.g. {(missing or extra)[0]}); the file is damaged")
    bad = [k for k in stored if stored[k] != expected[k]]
    if bad:
        raise CFMError(f"model file {path!r}: tensor {bad[0]} has shape {stored[bad[0]]}, "
                       f"config says {expected[bad[0]]}; the file is damaged")
    if not dtypes <= {"F32", "F16", "BF16", "F64"}:
        raise CFMError(f"model file {path!r} holds {sorted(dtypes - {'F32', 'F16', 'BF16', 'F64'})[0]} tensors; CFM "
                       "weights are floating point: the file is damaged or not a CFM model")


# ---------------------------------------------------------------- official checkpoints, read without running code

class _Inert:
    """Stands in for every class or function a pickle names: accepts any arguments, items and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.items, self.state = args, {}, None

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # dict subclasses (e.g. Lightning's AttributeDict) unpickle via SETITEMS
        self.items[key] = value

    def append(self, value):  # list subclasses unpickle via APPENDS
        self.items[len(self.items)] = value

    def extend(self, values):
        for value in values:
            self.append(value)

    def __call__(self, *args, **kwargs):
        return _Inert(*args)


def _inert_type(qualified_name: str) -> type:
    module, _, name = qualified_name.rpartition(".")
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


class _InertUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only torch's own weights-only allowlist (tensor rebuild functions, dtypes,
    OrderedDict, ...). Every other global (``omegaconf...DictConfig``, ``posix.system``, ``builtins.exec``) becomes
    an inert stand-in class, so a REDUCE of it constructs a harmless object instead of calling anything."""

    def find_class(self, module: str, name: str):
        qualified = f"{module}.{name}"
        allowed = _torch_allowed_globals()
        return allowed[qualified] if qualified in allowed else _inert_type(qualified)


@functools.lru_cache(maxsize=1)
def _torch_allowed_globals() -> dict:
    """What ``torch.load(weights_only=True)`` itself allows (private API: fall back to the essentials)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return dict(_get_allowed_globals())
    except ImportError:
        from torch import _utils
        return {"collections.OrderedDict": collections.OrderedDict, "torch.Size": torch.Size,
                "torch._utils._rebuild_tensor_v2": _utils._rebuild_tensor_v2,
                "torch._utils._rebuild_parameter": _utils._rebuild_parameter}


# torch.load(pickle_module=...) needs only ``Unpickler`` (and ``load`` for legacy non-zip files, which we refuse).
_INERT_PICKLE = types.SimpleNamespace(__name__="cfm_core_inert_pickle", Unpickler=_InertUnpickler,
                                      load=None, __version__="1")


def read_official_state_dict(path: str) -> dict:
    """Tensors of a Lightning ``.ckpt``, read without running any code from the file.

    torch's weights-only loader refuses these files outright (they pickle OmegaConf configs; a malicious one names
    ``os.system``), so we unpickle with :class:`_InertUnpickler`: tensors are rebuilt by torch's allowlisted
    functions and every other global the file names is replaced by an inert stand-in.
    """
    if not os.path.isfile(path):
        raise CFMError(f"{path!r} does not exist; pass the official fm-boosting .ckpt file")
    if not zipfile.is_zipfile(path):
        raise CFMError(f"{path!r} is not a torch zip checkpoint; official checkpoints are Lightning .ckpt files")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_INERT_PICKLE)
    except Exception as exc:  # corrupt archive or a pickle our stand-ins cannot absorb: nothing was executed
        raise CFMError(f"{path!r} could not be read as a torch checkpoint ({type(exc).__name__}: {exc})") from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise CFMError(f"{path!r} holds no state_dict; is it an official fm-boosting checkpoint?")
    return {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def official_config(net_sd: dict, dim_head: int = OFFICIAL_DIM_HEAD) -> UNetConfig:
    """Read the official EfficientUNet architecture off its tensor shapes.

    Shapes give the attention width heads·dim_head but not the split; the official configs use dim_head 64,
    pass ``dim_head`` for a checkpoint trained with another one.
    """
    try:
        mc = int(net_sd["input_blocks.0.0.weight"].shape[0])
        in_ch = int(net_sd["input_blocks.0.0.weight"].shape[1])
        downs = sorted(int(k.split(".")[1]) for k in net_sd if k.endswith(".op.weight"))
        n_levels = len(downs) + 1
        nrb = downs[0] - 1 if downs else sum(1 for k in net_sd if k.endswith("in_layers.2.weight")
                                             and k.startswith("input_blocks."))
        mults, attn_ds, block, ds = [], [], 1, 1
        for _ in range(n_levels):
            mults.append(int(net_sd[f"input_blocks.{block}.0.in_layers.2.weight"].shape[0]) // mc)
            if f"input_blocks.{block}.1.qkv.weight" in net_sd:
                attn_ds.append(ds)
            block += nrb + 1
            ds *= 2
        qkv = int(net_sd["middle_block.1.qkv.weight"].shape[0])
        inner = int(net_sd["middle_block.1.proj_out.weight"].shape[1])
    except (KeyError, IndexError, ValueError) as exc:
        raise CFMError(f"the checkpoint's UNet tensors do not look like an official EfficientUNet "
                       f"(missing {exc}); is it an fm-boosting checkpoint?") from None
    if dim_head < 1 or qkv != 3 * inner or inner % dim_head:
        raise CFMError(f"attention width {inner} (qkv {qkv}) does not split into heads of dim_head={dim_head}; "
                       "pass the dim_head the model was trained with (--dim-head)")
    return UNetConfig(latent_channels=in_ch // 2, model_channels=mc, channel_mult=tuple(mults),
                      num_res_blocks=nrb, attention_resolutions=tuple(attn_ds), num_heads=inner // dim_head,
                      dim_head=dim_head, attention="official")


def convert_official(src: str, dst: str, *, use_ema: bool = True, latent: LatentSpec | None = None,
                     dim_head: int = OFFICIAL_DIM_HEAD, overwrite: bool = True) -> CFMModel:
    """Convert an official fm-boosting Lightning checkpoint to a self-describing safetensors file (``dst`` must
    not be ``src`` itself)."""
    check_destination(dst, overwrite=overwrite, inputs=(src,))
    sd = read_official_state_dict(src)
    prefix = OFFICIAL_EMA_PREFIX if use_ema else OFFICIAL_ONLINE_PREFIX
    net_sd = {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}
    if not net_sd:
        raise CFMError(f"{src!r} has no '{prefix}*' tensors; is it an fm-boosting checkpoint?")
    unet = official_config(net_sd, dim_head)
    # The official setup: SD1.x kl-f8 VAE, ×0.18215, 64→128 latents, noise step 400, Euler.
    config = CFMConfig(unet=unet, latent=latent or LatentSpec(family="sd15"), factor=2, noise_step=DEFAULT_NOISE_STEP,
                       default_solver="euler", default_steps=40,
                       training={"source": os.path.basename(src), "weights": "ema" if use_ema else "online"})
    model = CFMModel(config)
    try:
        model.net.load_state_dict(net_sd)
    except RuntimeError as exc:
        raise CFMError(f"{src!r}: the UNet tensors do not fit the architecture read off their shapes "
                       f"({str(exc).splitlines()[0]}); is it an fm-boosting checkpoint?") from None
    save_model(model, dst, overwrite=overwrite)
    return model
