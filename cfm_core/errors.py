"""One exception type for every bad input, so callers (CLI, ComfyUI nodes) can show it as one line."""


class CFMError(ValueError):
    """A bad input or file. The message names the input and says how to fix it, on one line."""
