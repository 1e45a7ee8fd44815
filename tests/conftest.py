"""Shared pytest setup. Keep it minimal: other test files may add fixtures here later.

* The repository root goes on ``sys.path`` so ``import cfm_core`` / ``import nodes`` work from any working dir.
* ``comfy``: a fixture for the ComfyUI node tests only. It puts ``tests/comfy_stub`` (stand-ins of ComfyUI's
  ``folder_paths`` and ``comfy.*``) on ``sys.path``, imports the pack's ``nodes`` package fresh against them, and
  removes all of it afterwards, so engine tests never see a fake ``comfy``.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
STUB_DIR = Path(__file__).resolve().parent / "comfy_stub"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _purge_comfy_modules() -> None:
    for name in list(sys.modules):
        if name in ("folder_paths", "latent_preview", "comfy", "nodes") or name.startswith(("comfy.", "nodes.")):
            del sys.modules[name]


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """The stand-in ComfyUI (base dir under tmp_path) and the pack's freshly imported ``nodes`` package."""
    monkeypatch.setenv("STUB_COMFY_BASE", str(tmp_path / "comfyui"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: on a shared 2-core box extra threads only wait on each other (~100×)
    _purge_comfy_modules()
    sys.path.insert(0, str(STUB_DIR))
    try:
        env = SimpleNamespace(
            folder_paths=importlib.import_module("folder_paths"),
            mm=importlib.import_module("comfy.model_management"),
            utils=importlib.import_module("comfy.utils"),
            sd=importlib.import_module("comfy.sd"),
            model_patcher=importlib.import_module("comfy.model_patcher"),
            nodes=importlib.import_module("nodes"),
            base=tmp_path / "comfyui",
        )
        yield env
    finally:
        sys.path.remove(str(STUB_DIR))
        _purge_comfy_modules()
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The suite's tensors are tiny; on a shared 2-core machine extra intra-op threads mostly spin-wait on each
    other (measured 10–100× slower). ``CFM_TEST_THREADS`` overrides."""
    import os

    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("CFM_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(previous)
