"""What a ComfyUI user gets from `pip install -r requirements.txt`: run with a venv that has only torch and that file.

Loads the pack the way ComfyUI's nodes.py does (module name = folder path with "." → "_x_") against the stand-in
ComfyUI in tests/comfy_stub (ComfyUI itself is not on PyPI), checks the six nodes registered, then runs the
bundled model through CFMLoader → CFMUpscaleImage and CFMBoost (pixel model through the stand-in VAE), which
imports everything a solve needs. Lists the third-party modules the pack's own code imported (an import hook
records the importer). Exit 0 = fine.

usage: VENV/bin/python .ci/check_comfy_install.py
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    os.environ.setdefault("STUB_COMFY_BASE", tempfile.mkdtemp(prefix="ci-comfyui-"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "comfy_stub"))
    import builtins

    import torch  # noqa: F401  (ComfyUI has imported torch before it loads any pack)

    name = ROOT.replace(".", "_x_")
    imported: set[str] = set()  # what the pack's own code imports (the nodes and the cfm_core they run)
    real_import = builtins.__import__

    def recording_import(module, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__", "")
        if level == 0 and importer.startswith(("cfm_core", name)):
            imported.add(module.split(".")[0])
        return real_import(module, globals, locals, fromlist, level)

    builtins.__import__ = recording_import
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    nodes = module.NODE_CLASS_MAPPINGS
    expected = {"CFMLoader", "PixelSpaceUpsample", "NoiseAugment", "CFMUpscaleLatent", "CFMBoost", "CFMUpscaleImage"}
    assert set(nodes) == expected, sorted(nodes)

    import comfy.sd

    handle, info = nodes["CFMLoader"]().load("(bundled) cfm-pixel-2x", "fp32")
    image, = nodes["CFMUpscaleImage"]().upscale(torch.rand(1, 32, 48, 3), handle, "euler", 1)
    assert image.shape == (1, 64, 96, 3), image.shape
    latent, = nodes["CFMBoost"]().boost({"samples": torch.randn(1, 4, 8, 8)}, comfy.sd.VAE(), handle, "euler", 1)
    assert latent["samples"].shape == (1, 4, 16, 16), latent["samples"].shape
    builtins.__import__ = real_import
    ours = {"comfy", "folder_paths", "nodes", "cfm_core", "latent_preview"}  # the pack and the ComfyUI stand-in
    third_party = sorted(imported - set(sys.stdlib_module_names) - ours - {"__future__"})
    print(f"pack imported and ran with only torch + requirements.txt: {info}")
    print(f"third-party modules loaded: {', '.join(third_party)}")  # imported by the pack's own code
    return 0


if __name__ == "__main__":
    sys.exit(main())
