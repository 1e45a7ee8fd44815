"""cfm-boost: ComfyUI node pack for CompVis' "Boosting Latent Diffusion with Flow Matching" (CFM upscaler).

Import is cheap and safe anywhere: outside ComfyUI (no ``folder_paths``) this exports empty mappings and imports
nothing else (not even torch); inside ComfyUI it registers the nodes. No downloads, no weights, no ``sys.exit``
at import. The engine is the standalone ``cfm_core`` package in this folder.
"""
try:  # both exist only inside ComfyUI (which has imported them already, so this is free there)
    import comfy.model_management  # noqa: F401
    import folder_paths  # noqa: F401
    IN_COMFYUI = True
except ImportError:
    IN_COMFYUI = False

if not IN_COMFYUI:
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
