"""``--device`` values → a torch device, with one-line errors for devices this machine does not have; and what
counts as running out of memory on any of them."""
from __future__ import annotations

import torch

from .errors import CFMError


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked to exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise CFMError(f"{flag} {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CFMError(f"{flag} {name}: torch sees no CUDA GPU (a CPU-only torch build?); use {flag} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CFMError(f"{flag} {name}: there are only {torch.cuda.device_count()} CUDA devices (0-based); "
                           f"use {flag} cuda:0")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps is not None and mps.is_available()):
            raise CFMError(f"{flag} mps: Apple's Metal backend is not available here; use {flag} cpu")
    elif device.type != "cpu":
        raise CFMError(f"{flag} {name!r}: only cpu, cuda and mps are supported")
    return device


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere torch emulates bf16 by
    converting to fp32, which is slower than fp32 itself."""
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_dtype(name: str, device: torch.device, flag: str = "--dtype") -> torch.dtype:
    """``auto`` means: bf16 on a CUDA GPU that runs it (the models train in bf16 mixed precision, and bf16 keeps
    fp32's range), else fp16 on CUDA; bf16 on a CPU with AVX512-BF16 or AMX (about 2× faster than fp32 there),
    else fp32 on the CPU; fp32 on MPS. The ComfyUI loader's ``auto`` is ComfyUI's own choice for the device.
    ``fp32``/``fp16``/``bf16`` are taken as given."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise CFMError(f"{flag} {name!r} is unknown; use auto, {', '.join(DTYPES)}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CFMError(f"{flag} bf16: this GPU does not support bfloat16; use {flag} fp16")
    return DTYPES[name]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors on every backend (CUDA, MPS, the CPU allocator); never for a
    :class:`CFMError` (a bad input that merely mentions memory). The CLI and the nodes both ask this."""
    if isinstance(exc, CFMError):
        return False
    if isinstance(exc, (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text
