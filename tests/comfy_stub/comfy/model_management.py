"""Stand-in for ``comfy.model_management`` on a CPU-only machine (``--cpu``), with the same function signatures.

``load_models_gpu`` really calls ``ModelPatcher.load`` (which writes ``model.device`` like ComfyUI does) and records
each call in ``stub_load_calls`` so tests can check the memory estimate and ``force_full_load``.
"""
from __future__ import annotations

import threading

import torch

try:
    OOM_EXCEPTION = torch.cuda.OutOfMemoryError
except AttributeError:  # pragma: no cover - same fallback as ComfyUI
    OOM_EXCEPTION = Exception

stub_free_memory_bytes = 64 * 1024 ** 3
stub_load_calls: list[dict] = []
current_loaded_models: list = []


def stub_reset() -> None:
    """Test-only: forget loads and clear the interrupt flag."""
    global interrupt_processing
    stub_load_calls.clear()
    current_loaded_models.clear()
    interrupt_processing = False


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def vae_device():
    return torch.device("cpu")


def vae_offload_device():
    return torch.device("cpu")


def is_device_cpu(device) -> bool:
    return getattr(device, "type", device) == "cpu"


def cpu_mode() -> bool:
    return True


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    if device is not None and is_device_cpu(device):
        return False
    return not cpu_mode()


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    if device is not None and is_device_cpu(device):
        return False
    return not cpu_mode()


def unet_dtype(device=None, model_params=0, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32],  # noqa: B006
               weight_dtype=None):
    # The real function first honours --fp16-unet etc. and fp8; then this loop (model_management.py:807).
    for dt in supported_dtypes:
        if dt == torch.float16 and should_use_fp16(device=device, model_params=model_params):
            return torch.float16
        if dt == torch.bfloat16 and should_use_bf16(device, model_params=model_params):
            return torch.bfloat16
    return torch.float32


def vae_dtype(device=None, allowed_dtypes=[]):  # noqa: B006 (ComfyUI's signature)
    return torch.float32


def dtype_size(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def module_size(module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def get_free_memory(dev=None, torch_free_too=False):
    return (stub_free_memory_bytes, stub_free_memory_bytes) if torch_free_too else stub_free_memory_bytes


def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006
    return []


def soft_empty_cache(force=False):
    pass


def unload_all_models():
    for patcher in list(current_loaded_models):
        patcher.detach()
    current_loaded_models.clear()


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    stub_load_calls.append({"models": list(models), "memory_required": memory_required,
                            "force_full_load": force_full_load})
    for patcher in models:
        patcher.load(patcher.load_device, force_patch_weights=force_patch_weights, full_load=force_full_load)
        if patcher not in current_loaded_models:
            current_loaded_models.append(patcher)


def load_model_gpu(model):
    return load_models_gpu([model])


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def interrupt_current_processing(value=True):
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted():
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()
