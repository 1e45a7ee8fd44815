"""Out-of-memory detection that never mistakes an interrupt or a bad input for an OOM."""
from __future__ import annotations

import comfy.model_management as mm

from cfm_core import CFMError


def is_oom(exc: BaseException) -> bool:
    """True for ComfyUI's ``OOM_EXCEPTION`` (``torch.cuda.OutOfMemoryError``) and other backends' OOM errors.

    On builds where ComfyUI sets ``OOM_EXCEPTION = Exception`` a plain isinstance test would match everything,
    including the user pressing Cancel, so those fall back to the message text.
    """
    if isinstance(exc, (mm.InterruptProcessingException, CFMError)):
        return False
    if mm.OOM_EXCEPTION is not Exception and isinstance(exc, mm.OOM_EXCEPTION):
        return True
    return "out of memory" in str(exc).lower()
