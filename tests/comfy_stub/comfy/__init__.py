"""Stand-in for the ``comfy`` package of ComfyUI (see tests/comfy_stub/README.md)."""
