"""Stand-in for ComfyUI's ``folder_paths`` (model folder registry). Same names and behaviour as the real module."""
from __future__ import annotations

import os
import tempfile

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

# The tests point this at a tmp_path (STUB_COMFY_BASE); never the working directory.
base_path = os.path.abspath(os.environ.get("STUB_COMFY_BASE", os.path.join(tempfile.gettempdir(), "stub-comfyui")))
models_dir = os.path.join(base_path, "models")

folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {
    "checkpoints": ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions),
    "vae": ([os.path.join(models_dir, "vae")], supported_pt_extensions),
    "custom_nodes": ([os.path.join(base_path, "custom_nodes")], set()),
}

_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}


def map_legacy(folder_name: str) -> str:
    return _LEGACY.get(folder_name, folder_name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folder_name = map_legacy(folder_name)
    if folder_name in folder_names_and_paths:
        paths, _exts = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())  # empty set = list every file


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[map_legacy(folder_name)][0][:]


def filter_files_extensions(files, extensions) -> list[str]:
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def _recursive_search(directory: str) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(directory, followlinks=True):
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/"))
    return found


def get_filename_list(folder_name: str) -> list[str]:
    folders, extensions = folder_names_and_paths[map_legacy(folder_name)]
    names: set[str] = set()
    for folder in folders:
        if os.path.isdir(folder):
            names.update(_recursive_search(folder))
    return filter_files_extensions(names, extensions)


def get_full_path(folder_name: str, filename: str) -> str | None:
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for folder in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(folder, filename)
        if os.path.isfile(full_path):
            return full_path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path
