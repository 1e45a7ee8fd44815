"""Out-of-memory detection that never mistakes an interrupt or a bad input for an OOM."""
from __future__ import annotations

import comfy.model_management as mm

from cfm_core.devices import is_out_of_memory


def is_oom(exc: BaseException) -> bool:
    """True for ComfyUI's ``OOM_EXCEPTION`` (``torch.cuda.OutOfMemoryError``) and other backends' OOM errors.

    On builds where ComfyUI sets ``OOM_EXCEPTION = Exception`` a plain isinstance test would match everything,
    including the user pressing Cancel, so those fall back to the message text.
    """
    if isinstance(exc, mm.InterruptProcessingException):
        return False
    if mm.OOM_EXCEPTION is not Exception and isinstance(exc, mm.OOM_EXCEPTION):
        return True
    return is_out_of_memory(exc)  # the engine's test, which the CLI uses too
