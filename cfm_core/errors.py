"""One exception type for every bad input, so callers (CLI, ComfyUI nodes) can show it as one line."""


class CFMError(ValueError):
    """A bad input or file. The message names the input and says how to fix it, on one line."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, shortened: for quoting a library's error in ours
    (torch's unpickling errors, for one, run to a dozen lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"
