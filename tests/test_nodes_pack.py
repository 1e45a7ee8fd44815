"""The pack as ComfyUI sees it: how it imports (inside and outside ComfyUI) and what its node classes declare."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUB_DIR = Path(__file__).resolve().parent / "comfy_stub"
NODE_IDS = {"CFMLoader", "PixelSpaceUpsample", "NoiseAugment", "CFMUpscaleLatent", "CFMBoost", "CFMUpscaleImage"}

# Loads the pack exactly like ComfyUI's nodes.py:load_custom_node (module name = folder path with "." → "_x_").
LOAD_LIKE_COMFYUI = """
import importlib.util, json, sys
pack = sys.argv[1]
name = pack.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, pack + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
report = {"ids": sorted(module.NODE_CLASS_MAPPINGS), "names": module.NODE_DISPLAY_NAME_MAPPINGS,
          "loaded": sorted(m for m in ("comfy", "folder_paths", "torch", "cfm_core") if m in sys.modules),
          "pack_on_path": any(p.rstrip("/") == pack for p in sys.path)}
if "cfm_core" in sys.modules:
    import folder_paths, comfy.model_management as mm
    report["cfm_core"] = sys.modules["cfm_core"].__file__
    report["cfm_folder"] = [sorted(x) if isinstance(x, set) else x for x in folder_paths.folder_names_and_paths["cfm"]]
    report["models_loaded"] = len(mm.current_loaded_models) + len(sys.modules[name + ".nodes.loader"]._cache)
print(json.dumps(report))
"""


def load_pack_in_fresh_python(pack: Path, with_comfy: bool, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["STUB_COMFY_BASE"] = str(tmp_path / "comfyui")
    if with_comfy:
        env["PYTHONPATH"] = str(STUB_DIR)
    proc = subprocess.run([sys.executable, "-c", LOAD_LIKE_COMFYUI, str(pack)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def dashed_pack(tmp_path) -> Path:
    """The pack under a folder name with a dash and a dot, as users clone it into custom_nodes."""
    link = tmp_path / "custom_nodes" / "cfm-boost.main"
    link.parent.mkdir()
    link.symlink_to(ROOT, target_is_directory=True)
    return link


def test_pack_outside_comfyui_exports_nothing_and_imports_nothing(dashed_pack, tmp_path):
    report = load_pack_in_fresh_python(dashed_pack, with_comfy=False, tmp_path=tmp_path)
    assert report["ids"] == [] and report["names"] == {}
    assert report["loaded"] == []  # not even torch
    assert not report["pack_on_path"]


def test_pack_inside_comfyui_registers_every_node_and_loads_no_weights(dashed_pack, tmp_path):
    report = load_pack_in_fresh_python(dashed_pack, with_comfy=True, tmp_path=tmp_path)
    assert set(report["ids"]) == NODE_IDS and set(report["names"]) == NODE_IDS
    assert report["cfm_core"].startswith(str(dashed_pack))  # the engine beside the nodes, found via the pack dir
    assert not report["pack_on_path"]  # and the pack dir is not left on sys.path
    assert report["cfm_folder"] == [[str(tmp_path / "comfyui" / "models" / "cfm")], [".safetensors"]]
    assert report["models_loaded"] == 0


def test_node_ids_and_display_names_come_from_the_classes(comfy):
    """Ids are class names (workflows store them); display names are each class's DISPLAY_NAME, unchanged."""
    assert {node_id: cls.__name__ for node_id, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items()} == {
        node_id: node_id for node_id in NODE_IDS}
    assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS == {
        "CFMLoader": "CFM Loader", "PixelSpaceUpsample": "CFM Pixel-Space Upsample",
        "NoiseAugment": "CFM Noise Augment", "CFMUpscaleLatent": "CFM Upscale Latent",
        "CFMBoost": "CFM Boost (upscale latent)", "CFMUpscaleImage": "CFM Upscale Image"}
    for node_id, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items():
        assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == cls.DISPLAY_NAME


def test_shared_widget_ranges_are_what_the_engine_accepts(comfy):
    """Every value a shared widget offers is accepted: steps (0 = default, else 1..max), noise_step (-1 = default,
    else 0..max), tile/overlap (clamped by run_model), and the same spec object on every node that shows it."""
    from cfm_core.augment import alpha_bar
    from cfm_core.solvers import check_steps
    from nodes import inputs

    steps = inputs.SOLVER_INPUTS["steps"][1]
    assert steps["min"] == 0 and check_steps(1) == 1 and check_steps(steps["max"]) == steps["max"]
    noise = inputs.NOISE_STEP_INPUT[1]
    assert noise["min"] == -1 and alpha_bar(0) > alpha_bar(noise["max"]) >= 0
    tile, overlap = inputs.TILE_INPUTS["tile"][1], inputs.TILE_INPUTS["overlap"][1]
    assert tile["min"] == 0 and tile["step"] >= 2 and overlap["min"] == 0  # run_model keeps overlap ≤ tile // 2
    for node_id, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items():
        required = cls.INPUT_TYPES()["required"]
        for name, spec in {**inputs.SOLVER_INPUTS, **inputs.TILE_INPUTS, **inputs.VAE_TILING_INPUTS}.items():
            if name in required:
                assert required[name] is spec, f"{node_id}.{name} is not the shared spec"
        if "noise_step" in required:
            assert required["noise_step"][0] == "INT"
            assert {k: v for k, v in required["noise_step"][1].items() if k != "tooltip"} == {
                k: v for k, v in noise.items() if k != "tooltip"}, node_id


def test_every_node_declares_category_description_and_tooltips(comfy):
    for node_id, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "CFM Boost", node_id
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40, node_id
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS), node_id
        signature = inspect.signature(getattr(cls(), cls.FUNCTION))
        spec = cls.INPUT_TYPES()
        json.dumps(spec)  # served as-is by /object_info
        assert set(spec) <= {"required", "optional", "hidden"}, node_id
        for section in ("required", "optional"):
            for name, (kind, *options) in spec.get(section, {}).items():
                assert options and options[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
                assert name in signature.parameters, f"{node_id}.{cls.FUNCTION} lacks parameter {name}"
                if section == "optional":
                    assert signature.parameters[name].default is None, f"{node_id}.{name} needs default None"
                check_default(node_id, name, kind, options[0])


def check_default(node_id: str, name: str, kind, options: dict) -> None:
    if isinstance(kind, list):
        assert kind, f"{node_id}.{name}: empty combo"
        assert options.get("default", kind[0]) in kind, f"{node_id}.{name}: default not among the choices"
    elif kind in ("INT", "FLOAT"):
        assert options["min"] <= options["default"] <= options["max"], f"{node_id}.{name}: default out of range"


def test_defaults_match_between_widgets_and_python(comfy):
    """A graph that leaves every widget at its default runs the same as calling the method without arguments."""
    for node_id, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items():
        signature = inspect.signature(getattr(cls(), cls.FUNCTION))
        for name, (kind, *options) in cls.INPUT_TYPES()["required"].items():
            default = signature.parameters[name].default
            if default is inspect.Parameter.empty:
                continue
            widget_default = options[0].get("default", kind[0] if isinstance(kind, list) else None)
            assert widget_default == default, f"{node_id}.{name}: widget {widget_default!r} vs python {default!r}"
